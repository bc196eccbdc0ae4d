"""The read stage of ``batch run --ray-address`` (no Ray needed): CSV chunks from the byte offsets of their records,
Parquet chunks planned by row groups; the lines are exactly ``Source.lines``, and each record or row group is decoded
once per run, not once per chunk (the re-read from the start made a run quadratic in the file's length)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedserve.batch.lines import BatchLine
from embedserve.batch.ray_runner import plan_rows
from embedserve.batch.ray_stages import ChunkReader
from embedserve.batch.sources import Source


def write_csv(path: Path, texts: list[str]) -> Path:
    """Ids and texts, with what a line-by-line reader gets wrong: a quoted field over three physical lines (and a
    quote and a comma in it), blank lines (no record for csv.DictReader), CRLF and LF endings, multi-byte UTF-8."""
    out = ["id,text\r\n", "\n"]
    for i, text in enumerate(texts):
        field = f'"{text} — naïve café, ""quoted""\nsecond line\r\nthird"' if i % 9 == 4 else text
        out.append(f"d{i},{field}" + ("\r\n" if i % 2 else "\n"))
        if i % 6 == 2:
            out.append("\n" if i % 4 else "\r\n")
    path.write_bytes("".join(out).encode("utf-8"))
    return path


def write_parquet(path: Path, texts: list[str], *, row_group_size: int) -> Path:
    table = pa.table({"doc": [f"d{i}" for i in range(len(texts))], "text": texts})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def read_all(source: Source, *, skip: int, chunk_rows: int) -> list[list[BatchLine]]:
    """What the read stage hands on for a run resumed after ``skip`` rows: one list per chunk, in order."""
    reader = ChunkReader(source=source)  # one reader actor, the chunks in order (as Ray Data sends them)
    return [read(reader, item) for item in plan_rows(source, skip=skip, chunk_rows=chunk_rows)]


def read(reader: ChunkReader, item: dict[str, int]) -> list[BatchLine]:
    """One plan item through the reader, as a block of one plan row."""
    columns = reader({key: np.array([value]) for key, value in item.items()})
    return [BatchLine(number=int(n), custom_id=str(c), body=orjson.loads(b))
            for n, c, b in zip(columns["number"], columns["custom_id"], columns["body"], strict=True)]  # fmt: skip


TEXTS = [f"passage {i}: " + "about vectors " * (i % 5 + 1) for i in range(37)]


def test_the_csv_is_one_a_line_by_line_reader_gets_wrong(tmp_path: Path) -> None:
    source = Source(write_csv(tmp_path / "c.csv", TEXTS), text_column="text")
    lines = list(source.lines())
    assert len(lines) == len(TEXTS) and source.path.read_bytes().count(b"\n") > len(TEXTS) + 8
    assert source.count() == len(TEXTS)  # the progress bar's total: records, not lines
    assert lines[4].body["input"].endswith("\nsecond line\r\nthird") and "naïve" in lines[4].body["input"]


@pytest.mark.parametrize("id_column", ["id", None])
@pytest.mark.parametrize(("skip", "chunk_rows"), [(0, 8), (11, 8), (4, 5), (36, 8), (37, 8)])
def test_csv_chunks_read_from_record_offsets_are_the_source_lines(
    tmp_path: Path, skip: int, chunk_rows: int, id_column: str | None
) -> None:
    source = Source(write_csv(tmp_path / "c.csv", TEXTS), text_column="text", id_column=id_column)
    chunks = read_all(source, skip=skip, chunk_rows=chunk_rows)
    assert [line for chunk in chunks for line in chunk] == list(source.lines(skip=skip))  # numbers and ids too
    assert all(len(chunk) == chunk_rows for chunk in chunks[:-1])


def test_a_tsv_is_planned_with_its_own_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "c.tsv"
    path.write_text("text\tid\n" + "".join(f'"{t}\nmore"\tx{i}\n\n' for i, t in enumerate(TEXTS[:9])))
    source = Source(path, text_column="text", id_column="id")
    assert [line for chunk in read_all(source, skip=2, chunk_rows=3) for line in chunk] == list(source.lines(skip=2))


@pytest.mark.parametrize(("skip", "chunk_rows"), [(0, 10), (10, 8), (12, 16), (35, 4), (37, 4), (3, 100)])
def test_parquet_chunks_planned_by_row_group_are_the_source_lines(tmp_path: Path, skip: int, chunk_rows: int) -> None:
    source = Source(write_parquet(tmp_path / "c.parquet", TEXTS, row_group_size=7), text_column="text",
                    id_column="doc")  # fmt: skip
    chunks = read_all(source, skip=skip, chunk_rows=chunk_rows)
    assert [line for chunk in chunks for line in chunk] == list(source.lines(skip=skip))
    assert all(len(chunk) == chunk_rows for chunk in chunks[:-1])


def test_a_parquet_chunk_is_planned_at_the_row_group_holding_its_first_row(tmp_path: Path) -> None:
    source = Source(write_parquet(tmp_path / "c.parquet", TEXTS, row_group_size=7), text_column="text")
    plan = plan_rows(source, skip=12, chunk_rows=8)  # rows 12, 20, 28, 36: groups of 7 rows start at 0, 7, 14, ...
    assert [(p["group"], p["over"], p["number"], p["rows"]) for p in plan] == [
        (1, 5, 13, 8), (2, 6, 21, 8), (4, 0, 29, 8), (5, 1, 37, 1)
    ]  # fmt: skip


def test_a_parquet_chunk_out_of_order_is_read_from_its_own_row_group(tmp_path: Path) -> None:
    source = Source(write_parquet(tmp_path / "c.parquet", TEXTS, row_group_size=7), text_column="text")
    plan = plan_rows(source, skip=0, chunk_rows=6)
    reader = ChunkReader(source=source)  # as after an actor restart, or a retried chunk
    got = {item["number"]: read(reader, item) for item in [plan[3], plan[0], plan[1], plan[5], plan[4]]}
    want = list(source.lines())
    for item in plan[:2] + plan[3:6]:
        assert got[item["number"]] == want[item["number"] - 1 : item["number"] - 1 + item["rows"]]


class CountingReader:
    """``csv.reader`` that counts the records it decodes (DictReader builds on it)."""

    decoded = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.reader = REAL_READER(*args, **kwargs)

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        record = next(self.reader)
        CountingReader.decoded += 1
        return record

    def __getattr__(self, name: str) -> Any:  # line_num, dialect
        return getattr(self.reader, name)


REAL_READER = csv.reader


def test_a_csv_run_decodes_each_record_once_not_once_per_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"row {i}" for i in range(400)]
    source = Source(write_csv(tmp_path / "c.csv", texts), text_column="text", id_column="id")
    with source.path.open(newline="", encoding="utf-8") as handle:
        records = sum(1 for _ in csv.reader(handle)) - 1  # blank lines included
    plan = plan_rows(source, skip=0, chunk_rows=10)
    monkeypatch.setattr(csv, "reader", CountingReader)
    CountingReader.decoded = 0
    reader = ChunkReader(source=source)
    chunks = [read(reader, item) for item in plan]
    assert [line.number for chunk in chunks for line in chunk] == list(range(1, 401)) and len(plan) == 40
    # Each record once, plus each chunk's look at the header (re-reading from the start decoded ~8,000 here).
    assert CountingReader.decoded <= records + len(plan)


def test_a_parquet_run_decodes_each_row_group_at_most_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"row {i}" for i in range(400)]
    source = Source(write_parquet(tmp_path / "c.parquet", texts, row_group_size=20), text_column="text")
    requested: Counter[int] = Counter()
    decoded = 0
    real = pq.ParquetFile.iter_batches

    def counting(self: pq.ParquetFile, *args: Any, row_groups: Any = None, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        nonlocal decoded
        requested.update(range(self.num_row_groups) if row_groups is None else row_groups)
        for batch in real(self, *args, row_groups=row_groups, **kwargs):
            decoded += batch.num_rows
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    for skip in (0, 150):  # a fresh run, and one resumed inside a row group (group 7 holds rows 140-159)
        requested.clear()
        decoded = 0
        lines = [line for chunk in read_all(source, skip=skip, chunk_rows=16) for line in chunk]
        assert [line.number for line in lines] == list(range(skip + 1, 401))
        assert set(requested.values()) == {1} and min(requested) == skip // 20  # one reader, opened once
        assert decoded == 400 - (skip // 20) * 20  # the groups from the resumed one on, each once
