"""Inputs of ``embedserve batch run``, read as a stream of batch lines (flat memory however long the file).

An OpenAI batch JSONL file gives its own lines; a corpus (JSONL, Parquet or CSV) gives one line per row, its
``--text-column`` as the input and its ``--id-column`` (or the row number) as the custom_id.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from embedserve.batch.lines import BatchLine, LineProblem, parse_line
from embedserve.batch.validate import CustomIds
from embedserve.errors import InvalidRequestError

ENDPOINT = "/v1/embeddings"


@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    text_column: str | None = None
    id_column: str | None = None

    @property
    def kind(self) -> str:
        suffix = self.path.suffix.lower()
        if suffix == ".parquet":
            return "parquet"
        if suffix in (".csv", ".tsv"):
            return "csv"
        return "corpus-jsonl" if self.text_column else "openai"

    def count(self) -> int:
        """How many lines or rows (a cheap pass, for the ETA)."""
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(self.path).metadata.num_rows)
        with self.path.open("rb") as handle:
            lines = sum(1 for raw in handle if raw.strip())
        return lines - 1 if self.kind == "csv" else lines

    def lines(self, *, skip: int = 0) -> Iterator[BatchLine]:
        if self.kind != "openai" and not self.text_column:
            raise InvalidRequestError(f"{self.path.name}: a {self.kind} corpus needs --text-column.")
        rows = {"openai": self._openai, "corpus-jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv}
        for index, line in enumerate(rows[self.kind]()):
            if index >= skip:
                yield line

    def line_offsets(self, *, skip: int, every: int) -> Iterator[tuple[int, int, int]]:
        """(byte offset, first line number, rows) of each run of ``every`` rows after ``skip``: JSONL inputs only."""
        assert self.kind in ("openai", "corpus-jsonl")
        start: tuple[int, int] | None = None
        rows = index = offset = 0
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    if index >= skip:
                        start = start or (offset, number)
                        rows += 1
                    index += 1
                offset += len(raw)
                if start and rows == every:
                    yield (*start, rows)
                    start, rows = None, 0
        if start:
            yield (*start, rows)

    def lines_at(self, offset: int, number: int) -> Iterator[BatchLine]:
        """The lines of a JSONL input from a byte offset where line ``number`` starts (see ``line_offsets``)."""
        with self.path.open("rb") as handle:
            handle.seek(offset)
            yield from self._jsonl_lines(handle, number)

    def _jsonl_lines(self, handle: BinaryIO, first: int) -> Iterator[BatchLine]:
        for number, raw in enumerate(handle, start=first):
            if not raw.strip():
                continue
            if self.kind == "corpus-jsonl":
                yield self._row(number, orjson.loads(raw))
                continue
            parsed = parse_line(raw, number=number, endpoint=ENDPOINT)
            if isinstance(parsed, LineProblem):
                raise InvalidRequestError(f"{self.path.name}: {parsed.message}")
            yield parsed

    def _openai(self) -> Iterator[BatchLine]:
        seen = CustomIds()  # the server's rule: a repeated custom_id refuses the file, naming the line
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                parsed = parse_line(raw, number=number, endpoint=ENDPOINT)
                if isinstance(parsed, BatchLine):
                    parsed = seen.repeat(parsed) or parsed
                if isinstance(parsed, LineProblem):
                    raise InvalidRequestError(f"{self.path.name}: {parsed.message}")
                yield parsed

    def _row(self, number: int, row: dict[str, Any]) -> BatchLine:
        assert self.text_column is not None
        if self.text_column not in row:
            raise InvalidRequestError(f"{self.path.name}: row {number} has no column '{self.text_column}'.")
        custom_id = str(row[self.id_column]) if self.id_column else str(number - 1)
        return BatchLine(number=number, custom_id=custom_id, body={"input": row[self.text_column]})

    def _jsonl(self) -> Iterator[BatchLine]:
        with self.path.open("rb") as handle:
            yield from self._jsonl_lines(handle, 1)

    def _csv(self) -> Iterator[BatchLine]:
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if self.path.suffix.lower() == ".tsv" else ",")
            for number, row in enumerate(reader, start=1):
                yield self._row(number, row)

    def _parquet(self) -> Iterator[BatchLine]:
        import pyarrow.parquet as pq

        columns = [c for c in (self.text_column, self.id_column) if c]
        number = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024, columns=columns):
            for row in batch.to_pylist():
                number += 1
                yield self._row(number, row)
