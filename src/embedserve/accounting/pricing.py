"""What a request costs in credits."""

from __future__ import annotations

import math


def price(tokens: int, *, credits_per_1k_tokens: float) -> int:
    """Credits for one request: ``credits_per_1k_tokens`` per started 1,000 tokens, rounded up per request."""
    if tokens <= 0 or credits_per_1k_tokens <= 0:
        return 0
    return math.ceil(tokens * credits_per_1k_tokens / 1000 - 1e-9)
