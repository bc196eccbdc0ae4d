"""``batch run --ray-address``: the same output as the in-process run, on a local Ray instance (skipped without Ray)."""

from __future__ import annotations

import builtins
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedserve.accounting.pricing import price
from embedserve.api.batch_codec import EmbeddingsCodec
from embedserve.batch import ray_runner, sinks
from embedserve.batch.lines import BatchLine, LineOutcome
from embedserve.batch.run_cli import run_batch
from embedserve.batch.sources import Source
from embedserve.errors import EngineError, InvalidRequestError
from embedserve.settings import EngineSettings, Settings
from tests.paths import REFERENCE_DIR
from tests.unit.batch.test_ray_reads import write_csv, write_parquet

# Ray's own modules warn about their own deprecated settings when a context is made; nothing of ours.
pytestmark = pytest.mark.filterwarnings(r"ignore::DeprecationWarning:ray\..*")
TEXTS = [f"passage {i}: " + "about vectors " * (i % 5 + 1) for i in range(37)]
SETTINGS = Settings(engine=EngineSettings(model=str(REFERENCE_DIR), backend="fake"))


def _lines(path: Path) -> dict[str, Any]:
    """custom_id -> the response body, less what differs per request (its id and time); each custom_id once."""
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []
    per_run = ("id", "created")
    by_id = {line["custom_id"]: {k: v for k, v in line["response"]["body"].items() if k not in per_run}
             for line in lines}  # fmt: skip
    assert len(by_id) == len(lines)
    return by_id


def _openai_batch(path: Path) -> Source:
    rows = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": t}}
            for i, t in enumerate(TEXTS)]  # fmt: skip
    rows[5]["body"] = {"input": ""}  # a bad line: goes to the error file in both runs
    rows[9]["body"] = {"input": [TEXTS[1], TEXTS[2]], "encoding_format": "base64"}
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" + (b"\n" if i == 3 else b"") for i, r in enumerate(rows)))
    return Source(path)


def test_jsonl_chunks_read_from_their_offsets_are_the_source_lines(tmp_path: Path) -> None:
    source = _openai_batch(tmp_path / "b.jsonl")
    spans = list(source.line_offsets(skip=4, every=10))
    assert [rows for _, _, rows in spans] == [10, 10, 10, 3]
    read = [line for offset, number, rows in spans for line in list(source.lines_at(offset, number))[:rows]]
    assert read == list(source.lines(skip=4))


def test_the_pool_always_leaves_cpu_to_the_read_stage() -> None:
    assert ray_runner.pool_size(2, 1.0) == (1, 1.0)
    assert ray_runner.pool_size(8, 2.0) == (3, 2.0)
    assert ray_runner.pool_size(1, 1.0) == (1, 0.5)


def test_without_ray_the_flag_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InvalidRequestError, match=r"embedserve\[ray\]"):
        ray_runner.import_ray()


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray instance for the module (starting one takes a while on a small machine)."""
    if importlib.util.find_spec("ray") is None:  # not imported here: Ray reads its auth settings on import
        pytest.skip("Ray is the optional extra embedserve[ray]; CI installs it")
    saved = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_MODE"] = "token"  # the Ray >= 2.59 default for a local cluster, made explicit
    ray = ray_runner.connect("local")
    yield
    ray.shutdown()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


async def test_a_ray_run_writes_what_the_in_process_run_writes(tmp_path: Path, local_ray: None) -> None:
    source = _openai_batch(tmp_path / "b.jsonl")
    await run_batch(source, tmp_path / "here.jsonl", settings=SETTINGS, codec=EmbeddingsCodec(), resume=False,
                    chunk_rows=8)  # fmt: skip
    nodes = ray_runner.run_on_ray(source, tmp_path / "ray.jsonl", settings=SETTINGS, address="local",
                                  resume=False, chunk_rows=8, stall_timeout=300)  # fmt: skip
    assert sum(nodes.values()) == len(TEXTS)
    here, there = _lines(tmp_path / "here.jsonl"), _lines(tmp_path / "ray.jsonl")
    assert list(there) == [f"r{i}" for i in range(len(TEXTS)) if i != 5]
    assert there == here  # same vectors (float and base64), same usage
    errors = _lines(tmp_path / "ray.jsonl.errors.jsonl")
    assert errors == _lines(tmp_path / "here.jsonl.errors.jsonl") and list(errors) == ["r5"]
    assert (Path.home() / ".ray" / "auth_token").exists() == ("auth_token" in _preexisting)  # no token file left


async def test_a_ray_run_writes_the_same_corpus_parquet(tmp_path: Path, local_ray: None) -> None:
    corpus = tmp_path / "c.parquet"
    pq.write_table(pa.table({"doc": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS}), corpus)
    source = Source(corpus, text_column="text", id_column="doc")
    await run_batch(source, tmp_path / "here.parquet", settings=SETTINGS, codec=EmbeddingsCodec(), resume=False,
                    chunk_rows=10)  # fmt: skip
    ray_runner.run_on_ray(source, tmp_path / "ray.parquet", settings=SETTINGS, address="local", resume=False,
                          chunk_rows=10, stall_timeout=300)  # fmt: skip
    here, there = pq.read_table(tmp_path / "here.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert there.schema == here.schema
    assert there.column("id").to_pylist() == [f"d{i}" for i in range(len(TEXTS))]
    np.testing.assert_array_equal(np.asarray(there.column("embedding").combine_chunks().flatten()),
                                  np.asarray(here.column("embedding").combine_chunks().flatten()))  # fmt: skip


class Crash(Exception):
    pass


async def _interrupted(source: Source, output: Path, monkeypatch: pytest.MonkeyPatch, *, chunks: int) -> int:
    """An in-process run into ``output`` that stops after ``chunks`` durable chunks of 5 rows: what --resume finds."""
    real_write, writes = sinks.Sink.write, []

    def crashing_write(self: sinks.Sink, outcomes: Any) -> None:
        real_write(self, outcomes)
        writes.append(len(outcomes))
        if len(writes) == chunks:
            raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(sinks.Sink, "write", crashing_write)
        with pytest.raises(Crash):
            await run_batch(source, output, settings=SETTINGS, codec=EmbeddingsCodec(), resume=False, chunk_rows=5)
    return sum(writes)


@pytest.mark.parametrize("kind", ["csv", "parquet"])
async def test_a_ray_run_resumed_mid_file_writes_what_the_in_process_run_writes(
    tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """CSV with a quoted field over several lines and blank lines; Parquet in row groups of 7 (row 11, where the run
    resumes, is inside the second): the Ray run reads each from its offsets and spans, the output is the same."""
    if kind == "csv":
        source = Source(write_csv(tmp_path / "c.csv", TEXTS), text_column="text")  # custom_id: the row number
    else:
        source = Source(write_parquet(tmp_path / "c.parquet", TEXTS, row_group_size=7), text_column="text",
                        id_column="doc")  # fmt: skip
    await run_batch(source, tmp_path / "here.jsonl", settings=SETTINGS, codec=EmbeddingsCodec(), resume=False,
                    chunk_rows=5)  # fmt: skip
    assert await _interrupted(source, tmp_path / "ray.jsonl", monkeypatch, chunks=2) == 10
    ray_runner.run_on_ray(source, tmp_path / "ray.jsonl", settings=SETTINGS, address="local", resume=True,
                          chunk_rows=8, stall_timeout=300)  # fmt: skip
    here, there = _lines(tmp_path / "here.jsonl"), _lines(tmp_path / "ray.jsonl")
    assert list(there) == list(here) and len(here) == len(TEXTS)  # each custom_id once, in order
    assert there == here


_preexisting = {p.name for p in (Path.home() / ".ray").glob("*")} if (Path.home() / ".ray").exists() else set()


def test_a_run_that_stops_progressing_fails_instead_of_hanging() -> None:
    never = threading.Event()

    def stalled() -> Iterator[int]:
        yield 1
        never.wait()
        yield 2

    got = []
    with pytest.raises(EngineError, match="No progress on Ray"):
        for item in ray_runner._within(0.2, stalled()):
            got.append(item)
    never.set()
    assert got == [1]


@pytest.mark.parametrize("how", ["the writer fails", "a stall"])
def test_a_run_that_ends_early_closes_the_ray_iterator(how: str) -> None:
    """The driver stopping (its writer raised, or no batch came in time) must close Ray Data's iterator, or a driver
    that stays attached (a server, a library caller) keeps the pipeline and its actor pool running."""
    closed = threading.Event()
    release = threading.Event()

    def batches() -> Iterator[int]:
        try:
            for i in range(1000):
                if how == "a stall" and i == 1:
                    release.wait(timeout=10)  # stuck inside Ray until it next yields
                yield i
        finally:
            closed.set()

    with pytest.raises(RuntimeError if how == "the writer fails" else EngineError):
        for item in ray_runner._within(0.5, batches()):
            if how == "the writer fails" and item == 1:
                raise RuntimeError("disk full")
    release.set()
    assert closed.wait(timeout=5), "the Ray iterator was left open"


def test_a_bad_input_line_inside_a_ray_failure_is_reported_as_itself() -> None:
    bad = InvalidRequestError("b.jsonl: Line 3 is not valid JSON.")
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = bad
    assert ray_runner._user_error(wrapped) is bad


async def test_a_server_with_a_ray_address_runs_job_lines_on_ray_with_the_same_results(local_ray: None) -> None:
    from embedserve.accounting.open_gateway import OpenGateway
    from embedserve.batch.ray_lines import RayLineRunner
    from embedserve.batch.setup import _line_runner
    from embedserve.engine.engine import Engine
    from embedserve.service import EmbeddingService

    settings = SETTINGS.model_copy(update={"ray_address": "local"})
    engine = Engine(settings.engine)
    await engine.start()
    try:
        service = EmbeddingService(engine=engine, gateway=OpenGateway(credits_per_1k_tokens=1.0), max_inputs=2048)
        on_ray, _ = _line_runner(settings, service=service, codec=EmbeddingsCodec(), rate=1.0)
        here, _ = _line_runner(SETTINGS, service=service, codec=EmbeddingsCodec(), rate=1.0)
        assert isinstance(on_ray, RayLineRunner) and not isinstance(here, RayLineRunner)
        lines = [BatchLine(number=i + 1, custom_id=f"c{i}", body={"input": t}) for i, t in enumerate(TEXTS[:9])]
        lines.append(BatchLine(number=10, custom_id="bad", body={"input": ""}))
        got, want = await on_ray.run_many(lines), await here.run_many(lines)
        got_held, want_held = await on_ray.run_many(lines, price=_held), await here.run_many(lines, price=_held)
    finally:
        await engine.stop()
    for on, off in ((got, want), (got_held, want_held)):
        assert [(o.ok, o.custom_id, o.inputs, o.tokens, o.credits) for o in on] == [
            (o.ok, o.custom_id, o.inputs, o.tokens, o.credits) for o in off
        ]
        assert [_body(o) for o in on] == [_body(o) for o in off]
    shown = [_body(o)["meta"]["usage"]["credits_used"] for o in got_held if o.ok]
    assert shown == [o.tokens for o in got_held if o.ok] == [o.credits for o in got_held if o.ok]
    assert shown != [_body(o)["meta"]["usage"]["credits_used"] for o in got if o.ok]  # the actors' price differs


def _held(tokens: int) -> int:
    """A job's price held at another rate than the actors' (a restart changed it): a credit a token."""
    return price(tokens, credits_per_1k_tokens=1000.0)


def _body(outcome: LineOutcome) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(outcome.data)["response"]["body"]
    return {k: v for k, v in body.items() if k not in ("id", "created")}
