"""A pass run layer by layer (what lets a batch job's pass pause for online work) gives the vectors a whole pass
gives, and through the engine an online request overtakes a running batch job's pass on real weights."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embedserve.engine.backends import create_backend
from embedserve.engine.batching import pad_batch
from embedserve.engine.encoding import Encoding
from embedserve.engine.engine import Engine
from embedserve.engine.loading import load_model
from embedserve.engine.scheduler import Priority
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.settings import EngineSettings
from tests.model.corpus import varied_sentences


def test_a_stepped_pass_gives_the_same_vectors_as_a_whole_one(minilm_model_dir: Path) -> None:
    settings = EngineSettings(model=str(minilm_model_dir), device="cpu", dtype="float32")
    model = load_model(settings)
    backend = create_backend(model, settings)
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    ids, mask = pad_batch(tok.encode_texts(varied_sentences(24), truncate=True, max_tokens=256), pad_id=tok.pad_id)
    whole = backend.forward(ids, mask)
    steps = backend.forward_steps(ids, mask)  # type: ignore[attr-defined]
    layers = 0
    while True:
        try:
            next(steps)
            layers += 1
        except StopIteration as done:
            stepped = done.value
            break
    assert layers == model.config.num_layers
    np.testing.assert_array_equal(stepped, whole)


async def test_an_online_request_overtakes_a_running_batch_job_pass(minilm_model_dir: Path) -> None:
    engine = Engine(
        EngineSettings(
            model=str(minilm_model_dir),
            device="cpu",
            dtype="float32",
            max_bulk_batch_tokens=8192,
            max_batch_tokens=8192,
        )
    )
    await engine.start()
    try:
        long_texts = [" ".join(["a long bulk text about trains and the weather"] * 25)] * 32  # one pass, 32 x 256
        bulk = await engine.encode(long_texts, query=False, truncate=True)
        online = await engine.encode(["Laura is a DJ."], query=False, truncate=True)
        order: list[str] = []

        async def run(name: str, encodings: Sequence[Encoding], priority: Priority) -> None:
            await engine.embed(encodings, priority=priority)
            order.append(name)

        job = asyncio.create_task(run("bulk", bulk.encodings, Priority.BULK))
        scheduler = engine._require_scheduler()
        for _ in range(1000):  # until the bulk pass (seconds on 2 cores) is on the inference thread
            if scheduler._bulk_in_flight:
                break
            await asyncio.sleep(0.01)
        assert scheduler._bulk_in_flight, "the bulk pass never started"
        await run("online", online.encodings, Priority.ONLINE)
        await job
        assert order == ["online", "bulk"]
        assert scheduler.preemptions >= 1
    finally:
        await engine.stop()
