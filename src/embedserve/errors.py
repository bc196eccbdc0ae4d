"""One exception tree for the whole package.

Each class carries its HTTP status, OpenAI error ``type`` and ``code``; ``param``, a retry delay and a rate-limit
standing are per instance. Engine and accounting raise these with values; ``api/errors.py`` renders them as the
OpenAI envelope and ``api/headers.py`` as response headers (``headers`` is for the API layer's own errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class RateLimitWindow:
    """One per-minute limit of a key (``requests`` or ``tokens``): its size, what is left, seconds until it resets."""

    name: str
    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """A key's standing against its limits after a request; ``retry_after_s`` is set when the request was refused."""

    windows: tuple[RateLimitWindow, ...] = ()
    retry_after_s: float | None = None


NO_LIMITS = RateLimitState()


class EmbedServeError(Exception):
    """Base of every error embedserve reports to a caller."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry_after_s: int | None = None,
        rate_limit: RateLimitState | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        self.retry_after_s = retry_after_s  # whole seconds the caller should wait before retrying
        self.rate_limit = rate_limit  # the caller's rate-limit standing, when the gateway counted the request


class InvalidRequestError(EmbedServeError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidInputError(InvalidRequestError):
    """The ``input`` field is malformed: empty, too many items, bad token ids."""

    code = "invalid_input"


class ContextLengthExceededError(InvalidRequestError):
    """An input is longer than the model's context and the caller did not ask for truncation."""

    code = "context_length_exceeded"


class UnsupportedDimensionsError(InvalidRequestError):
    code = "invalid_dimensions"


class ModelNotFoundError(EmbedServeError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFoundError(EmbedServeError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(EmbedServeError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLargeError(EmbedServeError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ValidationFailedError(EmbedServeError):
    """The body is not valid JSON or does not match the request schema (400, as OpenAI answers it)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationError(EmbedServeError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(EmbedServeError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class ClientDisconnectedError(EmbedServeError):
    """The client hung up before its response was ready (nginx's 499): logged, not an error; nothing is sent."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class InsufficientQuotaError(EmbedServeError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class RateLimitExceededError(EmbedServeError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServerOverloadedError(EmbedServeError):
    """The engine's queue is full; the caller should retry after ``retry_after_s`` seconds."""

    status = 503
    type = "server_error"
    code = "server_overloaded"


class ServiceUnavailableError(EmbedServeError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ModelLoadError(EmbedServeError):
    """The model could not be found or loaded; raised at start-up, before any request."""

    code = "model_load_failed"


class EngineError(EmbedServeError):
    """Inference failed. The message is generic; the cause is logged, never returned."""

    code = "engine_error"


class StoreError(EmbedServeError):
    """The accounting store is unreachable or inconsistent."""

    code = "store_error"


class StoreUnavailableError(StoreError):
    """The accounting database or the rate-limit store did not answer in time; retry after ``retry_after`` seconds.

    Nothing was charged: a request that fails with it before inference never reserved credits, and one whose
    settlement could not be written is settled by a retry once the store answers again.
    """

    status = 503
    code = "store_unavailable"
    retry_after: ClassVar[int] = 5
