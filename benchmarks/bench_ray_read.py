"""The read stage of ``batch run --ray-address`` alone (no Ray, no model): seconds to plan and read every chunk of a
CSV and of a one-row-group Parquet file, with ``ChunkReader`` and with the earlier ``source.lines(skip=...)`` per
chunk (``--old-up-to`` rows at most: it grows with the square of the file's length).

    python benchmarks/bench_ray_read.py 10000 40000 200000
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from embedserve.batch.ray_runner import plan_rows  # noqa: E402
from embedserve.batch.ray_stages import ChunkReader  # noqa: E402
from embedserve.batch.sources import Source  # noqa: E402


def write_files(root: Path, rows: int) -> tuple[Path, Path]:
    texts = [f"passage {i}: " + "about vectors " * (i % 7 + 3) for i in range(rows)]
    ids = [f"d{i}" for i in range(rows)]
    corpus_csv = root / f"c{rows}.csv"
    with corpus_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(zip(ids, texts, strict=True))
    corpus_parquet = root / f"c{rows}.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), corpus_parquet, row_group_size=rows)
    return corpus_csv, corpus_parquet


def read_now(source: Source, chunk_rows: int) -> tuple[int, float]:
    started, reader, rows = time.perf_counter(), ChunkReader(source=source), 0
    for item in plan_rows(source, skip=0, chunk_rows=chunk_rows):
        rows += len(reader({key: np.array([value]) for key, value in item.items()})["number"])
    return rows, time.perf_counter() - started


def read_before(source: Source, chunk_rows: int) -> tuple[int, float]:
    started, total, rows = time.perf_counter(), source.count(), 0
    for skip in range(0, total, chunk_rows):
        rows += sum(1 for _ in itertools.islice(source.lines(skip=skip), min(chunk_rows, total - skip)))
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", type=int, nargs="+")
    parser.add_argument("--chunk-rows", type=int, default=256)
    parser.add_argument("--old-up-to", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            for kind, path in zip(("csv", "parquet"), write_files(Path(tmp), rows), strict=True):
                source = Source(path, text_column="text", id_column="id")
                got, now = read_now(source, args.chunk_rows)
                line = f"{rows:>9,} rows {kind:<8} now {now:7.2f} s"
                if rows <= args.old_up_to:
                    again, before = read_before(source, args.chunk_rows)
                    assert got == again == rows
                    line += f" | before {before:7.2f} s"
                print(line, flush=True)


if __name__ == "__main__":
    main()
