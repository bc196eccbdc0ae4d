"""Choosing the next batch: the oldest waiting input always goes next, joined by inputs of similar length.

Padded cost is ``longest x count`` tokens, kept under the token budget. Sorting by length cuts padding; anchoring
on the oldest entry means a long input is never starved by a stream of short ones. A batch stops growing when more
padding would be wasted than ``max_padding_ratio`` of its real tokens: on a CPU a bigger batch is no faster per
token, so padding is pure loss. Small batches, under ``free_padding_tokens`` padded, may pad freely: there per-call
overhead dominates (``SMALL_BATCH_TOKENS`` on a CPU; a GPU's forward pass costs the same from 10 to ~4000 tokens).
``pad_batch`` lays a chosen batch out as the padded id and mask arrays every backend runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from embedserve.engine.encoding import Encoding

SMALL_BATCH_TOKENS = 512


def plan_batch(
    lengths: Sequence[int],
    *,
    oldest: int,
    max_tokens: int,
    max_size: int,
    max_padding_ratio: float = 0.25,
    free_padding_tokens: int = SMALL_BATCH_TOKENS,
) -> list[int]:
    """Indices into ``lengths`` for the next batch; always contains ``oldest``.

    Greedy growth over the length-sorted order, outward from the anchor: each step adds the neighbour that adds
    the least padding, while the padded cost stays within ``max_tokens``, the count within ``max_size``, and the
    padding within ``max_padding_ratio`` of the real tokens (or the padded cost within ``free_padding_tokens``).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pos = order.index(oldest)
    lo = hi = pos
    real = lengths[oldest]
    while hi - lo + 1 < max_size:
        count = hi - lo + 1
        longest = lengths[order[hi]]
        options = []  # (padding added, direction, new padded cost, new real tokens)
        if lo > 0:
            added = lengths[order[lo - 1]]
            options.append((longest - added, -1, (count + 1) * longest, real + added))
        if hi + 1 < len(order):
            added = lengths[order[hi + 1]]
            options.append((count * (added - longest), 1, (count + 1) * added, real + added))
        fits = [
            o
            for o in options
            if o[2] <= max_tokens and (o[2] <= free_padding_tokens or o[2] <= (1 + max_padding_ratio) * o[3])
        ]
        if not fits:
            break
        _, direction, _, real = min(fits)
        if direction < 0:
            lo -= 1
        else:
            hi += 1
    return [order[i] for i in range(lo, hi + 1)]


def padded_cost(lengths: Sequence[int]) -> int:
    return max(lengths, default=0) * len(lengths)


def pad_batch(encodings: Sequence[Encoding], *, pad_id: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """A batch as ``(batch, longest)`` int64 ids (``pad_id`` past each input's end) and its attention mask."""
    longest = max(e.length for e in encodings)
    ids = np.full((len(encodings), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : enc.length] = enc.ids
        mask[row, : enc.length] = 1
    return ids, mask
