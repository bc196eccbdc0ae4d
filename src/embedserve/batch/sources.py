"""Inputs of ``embedserve batch run``, read as a stream of batch lines (flat memory however long the file).

An OpenAI batch JSONL file gives its own lines; a corpus (JSONL, Parquet or CSV) gives one line per row, its
``--text-column`` as the input and its ``--id-column`` (or the row number) as the custom_id.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
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
        if self.kind == "csv":  # records, not lines: a quoted field may span several
            return sum(1 for _ in self._csv_starts())
        with self.path.open("rb") as handle:
            return sum(1 for raw in handle if raw.strip())

    def lines(self, *, skip: int = 0) -> Iterator[BatchLine]:
        if self.kind != "openai" and not self.text_column:
            raise InvalidRequestError(f"{self.path.name}: a {self.kind} corpus needs --text-column.")
        rows = {"openai": self._openai, "corpus-jsonl": self._jsonl, "parquet": self._parquet, "csv": self._csv}
        for index, line in enumerate(rows[self.kind]()):
            if index >= skip:
                yield line

    def line_offsets(self, *, skip: int, every: int) -> Iterator[tuple[int, int, int]]:
        """(byte offset, first row number, rows) of each run of ``every`` rows after ``skip``: JSONL and CSV inputs.

        One pass over the file, so that each chunk can then be read from its own offset (``lines_at``) instead of
        streaming from the start and skipping, which made a run quadratic in the file's length.
        """
        assert self.kind in ("openai", "corpus-jsonl", "csv")
        starts = self._csv_starts() if self.kind == "csv" else self._jsonl_starts()
        start: tuple[int, int] | None = None
        rows = 0
        for index, (offset, number) in enumerate(starts):
            if index < skip:
                continue
            start = start or (offset, number)
            rows += 1
            if rows == every:
                yield (*start, rows)
                start, rows = None, 0
        if start:
            yield (*start, rows)

    def _jsonl_starts(self) -> Iterator[tuple[int, int]]:
        """(byte offset, line number) of each non-blank line."""
        offset = 0
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield offset, number
                offset += len(raw)

    def _csv_starts(self) -> Iterator[tuple[int, int]]:
        """(byte offset, row number) of each CSV record after the header, as ``csv.DictReader`` numbers them: a
        quoted field may span physical lines, and a blank line is no record. The reader asks for a line only when
        the record so far is incomplete, so what it has consumed after a record is where the next one starts."""
        consumed = 0

        def physical(handle: Iterable[str]) -> Iterator[str]:
            nonlocal consumed
            for line in handle:
                consumed += len(line.encode("utf-8"))
                yield line

        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(physical(handle), delimiter=self._delimiter)
            next(reader, None)  # the header
            number, at = 0, consumed
            for record in reader:
                if record:  # [] is a blank line, which DictReader skips
                    number += 1
                    yield at, number
                at = consumed

    def lines_at(self, offset: int, number: int) -> Iterator[BatchLine]:
        """The lines of a JSONL or CSV input from a byte offset where row ``number`` starts (see ``line_offsets``)."""
        if self.kind == "csv":
            yield from self._csv_at(offset, number)
            return
        with self.path.open("rb") as handle:
            handle.seek(offset)
            yield from self._jsonl_lines(handle, number)

    def _csv_at(self, offset: int, number: int) -> Iterator[BatchLine]:
        with self.path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle, delimiter=self._delimiter), None)
        with self.path.open("rb") as raw:
            raw.seek(offset)
            with io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, fieldnames=header, delimiter=self._delimiter)
                for n, row in enumerate(reader, start=number):
                    yield self._row(n, row)

    def row_group_offsets(self, *, skip: int, every: int) -> Iterator[tuple[int, int, int, int]]:
        """(row group, rows before the run in it, first row number, rows) of each run of ``every`` rows after
        ``skip``: Parquet inputs, planned from the file's metadata alone (nothing is decoded)."""
        import pyarrow.parquet as pq

        meta = pq.ParquetFile(self.path).metadata
        sizes = [meta.row_group(group).num_rows for group in range(meta.num_row_groups)]
        total, group, begin = sum(sizes), 0, 0
        for start in range(skip, total, every):
            while begin + sizes[group] <= start:
                begin += sizes[group]
                group += 1
            yield group, start - begin, start + 1, min(every, total - start)

    def row_group_lines(self, group: int, *, over: int, number: int) -> Iterator[BatchLine]:
        """The rows from row group ``group`` to the end, less its first ``over``; the first is row ``number``.

        Row groups are decoded as the rows are asked for: a reader that keeps this iterator across chunks decodes
        each row group once (Parquet cannot start inside a row group without decoding what precedes it there).
        """
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(self.path)
        columns = [c for c in (self.text_column, self.id_column) if c]
        groups = list(range(group, handle.num_row_groups))
        for batch in handle.iter_batches(batch_size=1024, row_groups=groups, columns=columns):
            if over >= batch.num_rows:
                over -= batch.num_rows
                continue
            for row in batch.slice(over).to_pylist():
                yield self._row(number, row)
                number += 1
            over = 0

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

    @property
    def _delimiter(self) -> str:
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _csv(self) -> Iterator[BatchLine]:
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=self._delimiter)
            for number, row in enumerate(reader, start=1):
                yield self._row(number, row)

    def _parquet(self) -> Iterator[BatchLine]:
        yield from self.row_group_lines(0, over=0, number=1)
