"""Choosing the next batch: the oldest waiting input always goes next, joined by inputs of similar length.

Padded cost is ``longest x count`` tokens, kept under the token budget. Sorting by length cuts padding; anchoring
on the oldest entry means a long input is never starved by a stream of short ones.
"""

from __future__ import annotations

from collections.abc import Sequence


def plan_batch(lengths: Sequence[int], *, oldest: int, max_tokens: int, max_size: int) -> list[int]:
    """Indices into ``lengths`` for the next batch; always contains ``oldest``.

    Greedy growth over the length-sorted order, outward from the anchor: each step adds the neighbour that adds
    the least padding, while the padded cost stays within ``max_tokens`` and the count within ``max_size``.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pos = order.index(oldest)
    lo = hi = pos
    while hi - lo + 1 < max_size:
        count = hi - lo + 1
        longest = lengths[order[hi]]
        options = []  # (padding added, direction)
        if lo > 0 and (count + 1) * longest <= max_tokens:
            options.append((longest - lengths[order[lo - 1]], -1))
        if hi + 1 < len(order) and (count + 1) * lengths[order[hi + 1]] <= max_tokens:
            options.append((count * (lengths[order[hi + 1]] - longest), 1))
        if not options:
            break
        _, direction = min(options)
        if direction < 0:
            lo -= 1
        else:
            hi += 1
    return [order[i] for i in range(lo, hi + 1)]


def padded_cost(lengths: Sequence[int]) -> int:
    return max(lengths, default=0) * len(lengths)
