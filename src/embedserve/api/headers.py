"""Response headers rendered from the values the lower layers return: rate-limit standing and retry delays.

OpenAI's names and formats: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` on every counted response,
``retry-after`` (whole seconds) and ``retry-after-ms`` on a 429, ``Retry-After`` on an overloaded or unavailable 503.
"""

from __future__ import annotations

import math

from embedserve import errors


def reset_text(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def rate_limit_headers(state: errors.RateLimitState | None) -> dict[str, str]:
    """The ``x-ratelimit-*`` headers of a key's standing, plus the retry delay when the request was refused."""
    headers: dict[str, str] = {}
    if state is None:
        return headers
    for window in state.windows:
        headers[f"x-ratelimit-limit-{window.name}"] = str(window.limit)
        headers[f"x-ratelimit-remaining-{window.name}"] = str(window.remaining)
        headers[f"x-ratelimit-reset-{window.name}"] = reset_text(window.reset_s)
    if state.retry_after_s is not None:
        wait = max(0.001, state.retry_after_s)
        headers["retry-after"] = str(max(1, math.ceil(wait)))
        headers["retry-after-ms"] = str(math.ceil(wait * 1000))
    return headers


def error_headers(exc: errors.EmbedServeError) -> dict[str, str]:
    """Every header an error response carries beyond the envelope's own: its own, rate limits, retry delay."""
    headers = dict(exc.headers)
    headers.update(rate_limit_headers(exc.rate_limit))
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.StoreUnavailableError):
        headers.setdefault("retry-after", str(exc.retry_after))
    return headers
