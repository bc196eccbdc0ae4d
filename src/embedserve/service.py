"""EmbeddingService.embed: normalise input -> engine.encode (tokenise, check the context) -> admit -> engine.embed
-> settle.

No HTTP in here: the API calls it with plain values, and so can a batch job. Every admission is settled exactly once,
charged on success and refunded on failure or cancellation (the client went away).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from embedserve import errors
from embedserve.accounting.protocol import Gateway
from embedserve.accounting.values import Admission, Principal
from embedserve.engine.encoding import Encoding, Token
from embedserve.engine.scheduler import EmbedTiming, Priority
from embedserve.engine.token_ids import TokenIdKind
from embedserve.errors import NO_LIMITS, RateLimitState
from embedserve.metrics import Metrics, observe_tokenization

if TYPE_CHECKING:
    from embedserve.engine.protocol import EmbeddingEngine

logger = logging.getLogger(__name__)

RawInput = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]
QUERY_INPUT_TYPES = frozenset({"query", "search_query"})
# A string (or token-id array) longer than this many characters (ids) per context token is refused, or, a string,
# cut at a word boundary when truncating, before it is tokenised: it bounds what one input can cost whatever it holds.
MAX_CHARS_PER_TOKEN = 100
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    input: RawInput
    request_id: str
    model: str | None = None
    input_type: str | None = None
    truncate: bool | None = None
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request judged valid, with its exact token counts, not yet admitted or run."""

    model: str
    encodings: tuple[Encoding, ...]
    token_ids: tuple[TokenIdKind, ...] = ()

    @property
    def token_counts(self) -> tuple[int, ...]:
        return tuple(e.length for e in self.encodings)


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: npt.NDArray[np.float32]
    token_counts: tuple[int, ...]
    truncated: int
    credits_used: int
    model: str
    rate_limit: RateLimitState = NO_LIMITS
    token_ids: tuple[TokenIdKind, ...] = ()  # how each token-id array was read; empty for text input
    credits_remaining: int | None = None  # the balance after this request; None: unlimited or no key store
    timing: EmbedTiming | None = None  # its queue and forward-pass time in the engine (the access line's)

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


@dataclass(frozen=True, slots=True)
class TokenizeResult:
    """``/tokenize``: each input's tokens (character offsets), and the caller's rate-limit standing."""

    tokens: list[list[Token]]
    model: str
    rate_limit: RateLimitState = NO_LIMITS


@dataclass(frozen=True, slots=True)
class DecodeResult:
    texts: list[str]
    model: str
    rate_limit: RateLimitState = NO_LIMITS


def normalize_input(
    raw: RawInput, *, max_inputs: int, max_chars: int | None = None, truncate: bool = False
) -> list[str] | list[list[int]]:
    """The four OpenAI input forms become either a list of texts or a list of token-id lists; strings over
    ``max_chars`` are refused (cut at a word boundary if ``truncate``), token-id arrays over it refused."""
    items = _items(raw, max_inputs=max_inputs)
    if items and isinstance(items[0], str):
        return [_checked_text(str(t), index=i, max_chars=max_chars, truncate=truncate) for i, t in enumerate(items)]
    for i, ids in enumerate(items):
        if max_chars is not None and len(ids) > max_chars:
            raise errors.ContextLengthExceededError(
                f"input[{i}] has {len(ids)} token ids; this server refuses arrays over {max_chars} ids "
                "(far past the model's context).",
                param="input",
            )
    return items


def _checked_text(text: str, *, index: int, max_chars: int | None, truncate: bool) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise errors.InvalidInputError(
            f"input[{index}] is not valid Unicode: it holds a lone surrogate (character {exc.start}).",
            param="input",
        ) from None
    if max_chars is None or len(text) <= max_chars:
        return text
    if not truncate:
        raise errors.ContextLengthExceededError(
            f"input[{index}] has {len(text)} characters; this server refuses strings over {max_chars} characters "
            'before tokenising them (far past the model\'s context). Shorten it, or send "truncate": true.',
            param="input",
        )
    # Cut at the last whitespace, so every word kept tokenises exactly as in the whole text.
    cut = text[:max_chars]
    spaces = [m.start() for m in _SPACE.finditer(cut, max(0, max_chars - 1000))]
    return cut[: spaces[-1]] if spaces else cut


def _items(raw: RawInput, *, max_inputs: int) -> list[str] | list[list[int]]:
    if isinstance(raw, str):
        items: list[str] | list[list[int]] = [raw]
    elif len(raw) == 0:
        raise errors.InvalidInputError("'input' must not be empty.", param="input")
    elif all(isinstance(x, int) for x in raw):
        items = [[int(cast(int, x)) for x in raw]]
    elif all(isinstance(x, str) for x in raw):
        items = [str(x) for x in raw]
    else:
        items = [[int(t) for t in cast(Sequence[int], x)] for x in raw]
    if len(items) > max_inputs:
        raise errors.InvalidInputError(
            f"'input' has {len(items)} items; this server accepts at most {max_inputs} per request.",
            param="input",
        )
    for i, item in enumerate(items):
        if len(item) == 0:
            kind = "string" if isinstance(item, str) else "token list"
            raise errors.InvalidInputError(f"input[{i}] is an empty {kind}.", param="input")
    return items


class EmbeddingService:
    def __init__(
        self, *, engine: EmbeddingEngine, gateway: Gateway, max_inputs: int, metrics: Metrics | None = None
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._gateway = gateway
        self._max_inputs = max_inputs

    @property
    def model_name(self) -> str:
        return self._engine.info.name

    def check_model(self, requested: str | None) -> str:
        info = self._engine.info
        if requested is not None and requested not in (info.name, info.source):
            raise errors.ModelNotFoundError(
                f"The model '{requested}' does not exist on this server; it serves '{info.name}'.",
                param="model",
            )
        return info.name

    def _check_dimensions(self, dimensions: int | None) -> None:
        dim = self._engine.info.dim
        if dimensions is not None and dimensions != dim:
            raise errors.UnsupportedDimensionsError(
                f"'dimensions' must be {dim} or omitted: {self.model_name} is not Matryoshka-trained, so "
                f"shortened vectors would lose quality; it only produces full {dim}-dimensional embeddings.",
                param="dimensions",
            )

    async def prepare(self, request: EmbedRequest) -> Prepared:
        """Judge a request and count its tokens: every rule of ``/v1/embeddings`` short of admission."""
        model = self.check_model(request.model)
        self._check_dimensions(request.dimensions)
        truncate = request.truncate if request.truncate is not None else self._engine.settings.auto_truncate
        max_chars = self._engine.info.max_tokens * MAX_CHARS_PER_TOKEN
        items = normalize_input(request.input, max_inputs=self._max_inputs, max_chars=max_chars, truncate=truncate)
        query = request.input_type in QUERY_INPUT_TYPES
        started = time.perf_counter()
        try:
            encoded = await self._engine.encode(items, query=query, truncate=truncate)
        except errors.ContextLengthExceededError:
            self._observe_tokenization(started)  # tokenised, then refused for its length
            raise
        self._observe_tokenization(started)
        return Prepared(model=model, encodings=encoded.encodings, token_ids=encoded.token_ids)

    def _observe_tokenization(self, started: float) -> None:
        if self._metrics is not None:  # ops wiring: tokenisation duration
            observe_tokenization(self._metrics, time.perf_counter() - started)

    async def embed(self, request: EmbedRequest, principal: Principal) -> EmbedResult:
        prepared = await self.prepare(request)
        counts = prepared.token_counts
        admission = await self._gateway.admit(
            principal, request_id=request.request_id, model=prepared.model, inputs=len(counts), tokens=sum(counts)
        )
        timing = EmbedTiming()
        vectors = await self._run(prepared.encodings, admission, timing=timing)
        result = self._result(prepared, vectors, credits=admission.credits, rate_limit=admission.rate_limit)
        return dataclasses.replace(result, credits_remaining=admission.credits_remaining, timing=timing)

    async def embed_prepaid(
        self, prepared: Prepared, *, credits: int, priority: Priority = Priority.BULK
    ) -> EmbedResult:
        """Run a prepared request whose credits are already held (a batch job's line), behind online work."""
        vectors = await self._engine.embed(prepared.encodings, priority=priority)
        return self._result(prepared, vectors, credits=credits, rate_limit=NO_LIMITS)

    @staticmethod
    def _result(
        prepared: Prepared, vectors: npt.NDArray[np.float32], *, credits: int, rate_limit: RateLimitState
    ) -> EmbedResult:
        return EmbedResult(
            vectors=vectors,
            token_counts=prepared.token_counts,
            truncated=sum(e.truncated for e in prepared.encodings),
            credits_used=credits,
            model=prepared.model,
            rate_limit=rate_limit,
            token_ids=prepared.token_ids,
        )

    async def tokenize(
        self, texts: str | Sequence[str], principal: Principal, *, add_special_tokens: bool, input_type: str | None
    ) -> TokenizeResult:
        """Show how texts tokenise for the model: rate limited like any request, no credits, nothing recorded."""
        max_chars = self._engine.info.max_tokens * MAX_CHARS_PER_TOKEN  # bounds the tokenizer's work, as for embeddings
        items = normalize_input(texts, max_inputs=self._max_inputs, max_chars=max_chars)
        rate_limit = await self._gateway.throttle(principal)
        query = input_type in QUERY_INPUT_TYPES
        tokens = await self._engine.tokens([str(t) for t in items], add_special_tokens=add_special_tokens, query=query)
        return TokenizeResult(tokens=tokens, model=self.model_name, rate_limit=rate_limit)

    async def decode(
        self, ids: Sequence[int] | Sequence[Sequence[int]], principal: Principal, *, skip_special_tokens: bool
    ) -> DecodeResult:
        """The model's token ids back to text: rate limited like any request, no credits, nothing recorded."""
        if len(ids) == 0:
            raise errors.InvalidInputError("'ids' must not be empty.", param="ids")
        flat = all(isinstance(x, int) for x in ids)
        id_lists = (
            [[int(cast(int, x)) for x in ids]] if flat else [[int(t) for t in cast(Sequence[int], x)] for x in ids]
        )
        if len(id_lists) > self._max_inputs:
            raise errors.InvalidInputError(
                f"'ids' has {len(id_lists)} lists; this server accepts at most {self._max_inputs} per request.",
                param="ids",
            )
        rate_limit = await self._gateway.throttle(principal)
        texts = await self._engine.decode(id_lists, skip_special_tokens=skip_special_tokens)
        return DecodeResult(texts=texts, model=self.model_name, rate_limit=rate_limit)

    async def _run(
        self, encodings: Sequence[Encoding], admission: Admission, *, timing: EmbedTiming
    ) -> npt.NDArray[np.float32]:
        ok = False
        try:
            vectors = await self._engine.embed(encodings, timing=timing)
            ok = True
            return vectors
        finally:
            # Shielded: a client that goes away cancels us, but its reservation must still be refunded.
            await self._gateway.settle(admission, ok=ok)  # the gateway shields its ledger write
