"""Freed tensor memory goes back to the system when the engine goes idle."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from embedserve.engine.memory import release_free_memory


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is a Linux matter")
def test_released_heap_memory_leaves_the_resident_set() -> None:
    # Many 256 KiB blocks come from the heap (under the mmap threshold); freeing them leaves holes glibc keeps.
    blocks = [np.ones(64 * 1024, dtype=np.float32) for _ in range(800)]
    keep = blocks[-1].copy()  # a live block at the heap's top: the freed ones below it cannot be trimmed from the end
    del blocks
    before = _rss_kib()
    assert release_free_memory()
    assert before - _rss_kib() > 100 * 1024, "less than 100 MiB of the ~200 MiB freed went back"
    assert keep.sum() == 64 * 1024
