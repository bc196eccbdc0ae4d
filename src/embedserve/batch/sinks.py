"""Outputs of ``embedserve batch run``: OpenAI output JSONL, or Parquet (``id`` + a fixed-size float32 vector).

Both resume: after each chunk the sink is flushed and fsynced and then ``OUTPUT.progress`` records how many rows
are done and how far each file goes, atomically; a resumed run cuts the files back to that point and skips the rows.
Parquet is written as one part file per chunk under ``OUTPUT.parts/`` and joined into ``OUTPUT`` at the end.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from embedserve.batch.lines import LineOutcome
from embedserve.batch.storage import atomic_writer


class Progress:
    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".progress")

    def load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"rows": 0, "out_bytes": 0, "err_bytes": 0, "parts": 0}
        loaded: dict[str, Any] = json.loads(self.path.read_text())
        return loaded

    def save(self, state: dict[str, Any]) -> None:
        with atomic_writer(self.path) as handle:
            handle.write(json.dumps(state).encode())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _open_at(path: Path, size: int) -> BinaryIO:
    handle = path.open("r+b" if path.exists() else "w+b")
    handle.truncate(size)
    handle.seek(size)
    return handle


class Sink:
    """Writes outcomes chunk by chunk; ``errors`` go to ``OUTPUT.errors.jsonl`` (OpenAI's error line shape)."""

    def __init__(self, output: Path, *, resume: bool, dim: int) -> None:
        self.output = output
        self.parquet = output.suffix.lower() == ".parquet"
        self.dim = dim
        self.progress = Progress(output)
        self.state = self.progress.load() if resume else {"rows": 0, "out_bytes": 0, "err_bytes": 0, "parts": 0}
        self.parts = output.with_name(output.name + ".parts")
        self.errors = _open_at(output.with_name(output.name + ".errors.jsonl"), self.state["err_bytes"])
        self.out = None if self.parquet else _open_at(output, self.state["out_bytes"])

    @property
    def rows_done(self) -> int:
        return int(self.state["rows"])

    def write(self, outcomes: Sequence[LineOutcome]) -> None:
        for o in outcomes:
            if not o.ok:
                self.errors.write(o.data)
        if self.parquet:
            self._write_part([o for o in outcomes if o.ok])
        else:
            assert self.out is not None
            for o in outcomes:
                if o.ok:
                    self.out.write(o.data)
        for handle in (self.out, self.errors):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
        self.state["rows"] += len(outcomes)
        self.state["err_bytes"] = self.errors.tell()
        if self.out is not None:
            self.state["out_bytes"] = self.out.tell()
        self.progress.save(self.state)

    def _write_part(self, ok: Sequence[LineOutcome]) -> None:
        import pyarrow.parquet as pq

        table = vector_table([o.custom_id for o in ok], [o.vectors for o in ok], dim=self.dim)
        self.parts.mkdir(exist_ok=True)
        with atomic_writer(self.parts / f"part-{self.state['parts']:07d}.parquet") as handle:
            pq.write_table(table, handle)
        self.state["parts"] += 1

    def release(self) -> None:
        """Close the files without finishing them: after a failure they stay at their last durable point."""
        for handle in (self.out, self.errors):
            if handle is not None:
                handle.close()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
        self.errors.close()
        if self.parquet:
            self._join_parts()
        if self.errors.name and Path(self.errors.name).stat().st_size == 0:
            Path(self.errors.name).unlink()
        self.progress.clear()

    def _join_parts(self) -> None:
        import pyarrow.parquet as pq

        schema = vector_table([], [], dim=self.dim).schema
        with atomic_writer(self.output) as handle, pq.ParquetWriter(handle, schema) as writer:
            for index in range(self.state["parts"]):
                part = pq.ParquetFile(self.parts / f"part-{index:07d}.parquet")
                for group in range(part.num_row_groups):  # one row group at a time: flat memory
                    writer.write_table(part.read_row_group(group))
        shutil.rmtree(self.parts, ignore_errors=True)


def vector_table(ids: Sequence[str], vectors: Sequence[Any], *, dim: int) -> Any:
    """``id`` (string) and ``embedding`` (fixed_size_list<float32, dim>): one row per input, as vector stores load."""
    import numpy as np
    import pyarrow as pa

    rows: list[str] = []
    blocks = []
    for custom_id, block in zip(ids, vectors, strict=True):
        n = len(block)
        rows.extend([custom_id] if n == 1 else [f"{custom_id}:{i}" for i in range(n)])
        blocks.append(np.asarray(block, dtype=np.float32).reshape(n, dim))
    flat = np.concatenate(blocks).reshape(-1) if blocks else np.zeros(0, dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dim)
    return pa.table({"id": pa.array(rows, type=pa.string()), "embedding": embedding})
