"""``embedserve batch run``: corpus Parquet round trip, OpenAI JSONL in and out, and --resume after a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedserve.api.batch_codec import EmbeddingsCodec
from embedserve.batch import sinks
from embedserve.batch.run_cli import run_batch
from embedserve.batch.sources import Source
from embedserve.engine.engine import Engine
from embedserve.settings import EngineSettings, Settings
from tests.paths import REFERENCE_DIR
from tests.serverproc import server_env

FAKE = ["--model", str(REFERENCE_DIR), "--backend", "fake"]
TEXTS = [f"passage {i}: " + "about vectors " * (i % 4 + 1) for i in range(23)]


def _reference(texts: list[str]) -> np.ndarray[Any, Any]:
    return Engine(EngineSettings(model=str(REFERENCE_DIR), backend="fake")).embed_texts(texts)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``embedserve batch run`` in a subprocess with this process's environment: the vectors are compared bit for bit
    with ``_reference``'s, and numpy's BLAS picks its kernel from the environment (``OPENBLAS_CORETYPE``), so a
    stripped one gave 1-ulp differences on a Zen 5."""
    return subprocess.run([sys.executable, "-m", "embedserve", "batch", "run", *args, *FAKE],
                          capture_output=True, text=True, timeout=120, env=server_env())  # fmt: skip


def test_corpus_parquet_round_trip(tmp_path: Path) -> None:
    ids = [f"doc-{i}" for i in range(len(TEXTS))]
    pq.write_table(pa.table({"doc_id": ids, "body": TEXTS, "other": list(range(len(TEXTS)))}), tmp_path / "c.parquet")
    out = tmp_path / "vectors.parquet"
    done = _cli(str(tmp_path / "c.parquet"), "-o", str(out), "--text-column", "body", "--id-column", "doc_id",
                "--chunk-rows", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.column_names == ["id", "embedding"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 1024)
    assert table.column("id").to_pylist() == ids
    vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, 1024)
    np.testing.assert_array_equal(vectors, _reference(TEXTS))
    assert not (tmp_path / "vectors.parquet.parts").exists() and not (tmp_path / "vectors.parquet.progress").exists()
    assert "rows" in done.stderr  # progress reported as log lines when not on a terminal


def test_openai_jsonl_in_and_out_with_a_bad_line(tmp_path: Path) -> None:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": t}}
             for i, t in enumerate(TEXTS[:4])] + [
        {"custom_id": "bad", "method": "POST", "url": "/v1/embeddings", "body": {"input": ""}}]  # fmt: skip
    source = tmp_path / "batch.jsonl"
    source.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    done = _cli(str(source), "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    out = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [o["custom_id"] for o in out] == ["r0", "r1", "r2", "r3"]
    got = np.array([o["response"]["body"]["data"][0]["embedding"] for o in out], dtype=np.float32)
    np.testing.assert_array_equal(got, _reference(TEXTS[:4]))
    errors = [orjson.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_bytes().splitlines()]
    assert errors[0]["custom_id"] == "bad" and errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["code"] == "invalid_input"
    again = _cli(str(source), "-o", str(tmp_path / "out.jsonl"))
    assert again.returncode == 2 and "--resume" in again.stderr


class Crash(Exception):
    pass


async def test_resume_after_a_crash_redoes_nothing_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"".join(orjson.dumps({"t": t}) + b"\n" for t in TEXTS))
    out = tmp_path / "o.jsonl"
    settings = Settings(engine=EngineSettings(model=str(REFERENCE_DIR), backend="fake"))
    source = Source(corpus, text_column="t")
    real_write, writes = sinks.Sink.write, []

    def crashing_write(self: sinks.Sink, outcomes: Any) -> None:
        real_write(self, outcomes)
        writes.append(len(outcomes))
        if len(writes) == 2:
            with self.output.open("ab") as junk:
                junk.write(b'{"half a line')  # torn write after the last durable point
            raise Crash

    monkeypatch.setattr(sinks.Sink, "write", crashing_write)
    with pytest.raises(Crash):
        await run_batch(source, out, settings=settings, codec=EmbeddingsCodec(), resume=False, chunk_rows=5)
    monkeypatch.setattr(sinks.Sink, "write", real_write)
    await run_batch(source, out, settings=settings, codec=EmbeddingsCodec(), resume=True, chunk_rows=5)
    ids = [orjson.loads(x)["custom_id"] for x in out.read_bytes().splitlines()]
    assert ids == [str(i) for i in range(len(TEXTS))]
