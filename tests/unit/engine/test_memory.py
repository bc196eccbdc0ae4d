"""Freed tensor memory goes back to the system when the engine goes idle."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from embedserve.engine.memory import configure_allocator, release_free_memory, user_sets_malloc


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is a Linux matter")
def test_released_heap_memory_leaves_the_resident_set() -> None:
    # Many 256 KiB blocks come from the heap (under the mmap threshold); freeing them leaves holes glibc keeps.
    if user_sets_malloc():
        pytest.skip("the environment sets glibc's malloc knobs itself: the blocks may not come from the heap")
    blocks = [np.ones(64 * 1024, dtype=np.float32) for _ in range(800)]
    keep = blocks[-1].copy()  # a live block at the heap's top: the freed ones below it cannot be trimmed from the end
    del blocks
    before = _rss_kib()
    assert release_free_memory()
    assert before - _rss_kib() > 100 * 1024, "less than 100 MiB of the ~200 MiB freed went back"
    assert keep.sum() == 64 * 1024


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is a Linux matter")
def test_large_blocks_are_reused_without_page_faults() -> None:
    # 48 MiB: past glibc's largest dynamic mmap threshold (32 MiB), so by default every such block is a fresh mmap
    # whose 12k pages fault in one by one, as a forward pass's FFN activations did. Plain malloc/free through ctypes:
    # the allocator's own behaviour, without numpy's huge pages or torch's aligned allocations in between.
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.argtypes, libc.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 48 * 1024 * 1024

    def touch_and_free() -> None:
        block = libc.malloc(size)
        assert block
        ctypes.memset(block, 1, size)
        libc.free(block)

    if user_sets_malloc():
        pytest.skip("the environment sets glibc's malloc knobs itself; embedserve leaves them alone")
    assert configure_allocator()
    touch_and_free()
    before = _minor_faults()
    for _ in range(5):
        touch_and_free()
    assert _minor_faults() - before < 1000, "freed 48 MiB blocks were unmapped and faulted in again"


def test_a_user_allocator_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert configure_allocator.__wrapped__() is False
