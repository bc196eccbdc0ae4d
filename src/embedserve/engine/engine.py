"""``Engine``: load a model, tokenise, and embed through the scheduler; usable with or without the HTTP server.

Async callers use ``start`` / ``encode`` / ``embed`` / ``stop`` (``EmbeddingEngine`` is that interface); scripts can
call ``embed_texts`` directly.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedserve.engine.backends import check_settings, create_backend
from embedserve.engine.backends.base import Backend
from embedserve.engine.batching import SMALL_BATCH_TOKENS, pad_batch
from embedserve.engine.encoding import Encoding, Token
from embedserve.engine.inputs import Encoded, InputEncoder, Items
from embedserve.engine.loading import LoadedModel, load_model
from embedserve.engine.memory import release_free_memory
from embedserve.engine.model_info import ModelInfo
from embedserve.engine.scheduler import (
    BatchStats,
    EmbedTiming,
    Priority,
    Scheduler,
    SchedulerConfig,
    inference_executor,
)
from embedserve.engine.token_ids import cl100k
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import EngineError
from embedserve.settings import EngineSettings

logger = logging.getLogger(__name__)


CPU_BATCH_TOKENS = 2048
CUDA_BATCH_TOKENS = 16384


def default_batch_tokens(device: str) -> int:
    """A CPU is no faster per token past ~2k tokens a batch (bf16 on AMX is 10-15% slower: 32x128 tokens 1795-1858
    tok/s against 2121-2176 for 16x128), so a bigger batch only adds latency; a GPU wants more."""
    return CUDA_BATCH_TOKENS if device.startswith("cuda") else CPU_BATCH_TOKENS


CUDA_FREE_PADDING_TOKENS = 4096


def default_batches_in_flight(device: str) -> int:
    """Passes handed to the inference thread at once. On a GPU, 2: a pass takes milliseconds, and the next one is
    ready when it ends. On a CPU, 1: a pass takes 50 ms to seconds, forming the next one after it costs under a
    millisecond, and a batch prepared while another runs holds only what had arrived by then: a burst of 64 one-text
    requests on an idle server ran as passes of 1, a few and the rest with 2, and of 1 and 63 with 1. In wall time
    the two measured alike on a 2-core Zen 4 (docs/internals.md, "How the next batch is chosen")."""
    return 2 if device.startswith("cuda") else 1


def default_free_padding_tokens(device: str) -> int:
    """Below this padded size a batch may pad freely. A GPU's forward pass is launch-bound there: on an H200 one
    10-token text took 5.8 ms and 32 texts of 128 tokens 6.7 ms (bge-large fp16), so more, longer texts in one pass
    beat less padding. A CPU's cost follows its tokens from a few hundred up."""
    return CUDA_FREE_PADDING_TOKENS if device.startswith("cuda") else SMALL_BATCH_TOKENS


class Engine:
    def __init__(
        self,
        settings: EngineSettings,
        *,
        backend: Backend | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self._backend = backend
        self._on_batch = on_batch
        self._model: LoadedModel | None = None
        self._tokenizer: WordPieceTokenizer | None = None
        self._inputs: InputEncoder | None = None
        self._scheduler: Scheduler | None = None
        self._info: ModelInfo | None = None
        # The one inference thread, kept for the engine's lifetime: the model is built on it, and a restarted engine
        # (each embed_texts call starts and stops it) must run on that same thread (see inference_executor).
        self._executor: ThreadPoolExecutor | None = None

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("Engine.start() has not run yet")
        return self._info

    @property
    def tokenizer_path(self) -> Path:
        """The model's ``tokenizer.json`` (API processes of ``--api-processes`` load it); valid once started."""
        if self._model is None:
            raise RuntimeError("Engine.start() has not run yet")
        return self._model.tokenizer_path

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    @property
    def queue_depth(self) -> int:
        return self._scheduler.queue_depth if self._scheduler else 0

    @property
    def queued_tokens(self) -> int:
        return self._scheduler.queued_tokens if self._scheduler else 0

    def _load(self) -> None:
        if self._backend is None:
            check_settings(self.settings)  # a dtype this machine cannot run fails before a model is fetched
        model = load_model(self.settings)
        tokenizer = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
        if self.settings.token_ids in ("auto", "tiktoken"):
            cl100k()  # load (and hash-check) the shipped cl100k_base now, not on the first token-id request
        backend = self._backend or create_backend(model, self.settings)
        self._model, self._tokenizer, self._backend = model, tokenizer, backend
        self._info = ModelInfo(
            name=model.served_name,
            source=model.source,
            dim=model.config.hidden_size,
            max_tokens=model.max_seq_length,
            vocab_size=model.config.vocab_size,
            pooling=model.pooling,
            normalize=model.normalize,
            backend=backend.name,
            dtype=backend.dtype,
            device=backend.device,
            cls_token_id=tokenizer.cls_id,
            sep_token_id=tokenizer.sep_id,
            pad_token_id=tokenizer.pad_id,
            max_batch_tokens=self.settings.max_batch_tokens or default_batch_tokens(backend.device),
            free_padding_tokens=(
                self.settings.free_padding_tokens
                if self.settings.free_padding_tokens is not None
                else default_free_padding_tokens(backend.device)
            ),
            random_weights=model.weights_path is None,
        )
        self._inputs = InputEncoder(tokenizer, self.settings, max_tokens=model.max_seq_length)

    async def start(self) -> None:
        """Load the model and backend (off the event loop), start the scheduler, run one warm-up pass."""
        if self._scheduler is not None:
            return
        if self._executor is None:
            self._executor = executor = inference_executor()
            weakref.finalize(self, executor.shutdown, wait=False)
        executor = self._executor
        try:
            if self._info is None:  # on the inference thread itself: see inference_executor
                await asyncio.get_running_loop().run_in_executor(executor, self._load)
            assert self._backend is not None and self._tokenizer is not None
            config = SchedulerConfig(
                pad_id=self._tokenizer.pad_id,
                max_batch_tokens=self.info.max_batch_tokens,
                max_padding_ratio=self.settings.max_padding_ratio,
                free_padding_tokens=self.info.free_padding_tokens,
                max_batch_size=self.settings.max_batch_size,
                in_flight=self.settings.batches_in_flight or default_batches_in_flight(self.info.device),
                max_queued_tokens=self.settings.max_queued_tokens,
                max_bulk_batch_tokens=self.settings.max_bulk_batch_tokens
                or default_free_padding_tokens(self.info.device),
                on_idle=release_free_memory,
                preempt_bulk=not self.info.device.startswith("cuda"),  # a GPU's bulk pass takes milliseconds
            )
            self._scheduler = Scheduler(self._backend, config, on_batch=self._on_batch, executor=executor)
        except BaseException:
            if self._info is None:  # nothing was built on it: let it go
                executor.shutdown(wait=False)
                self._executor = None
            raise
        self._scheduler.start()
        await self.ready()
        logger.info(
            "engine ready: %s (%d-dim) on %s %s %s",
            self.info.name,
            self.info.dim,
            self.info.backend,
            self.info.dtype,
            self.info.device,
        )

    async def stop(self, *, timeout: float | None = None) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            await scheduler.stop(timeout=timeout)
        if self._backend is not None:
            self._backend.close()

    async def encode(self, items: Items, *, query: bool, truncate: bool) -> Encoded:
        """A request's texts or token-id arrays (``token_ids`` says how those are read) as the model's encodings:
        the query instruction prepended if ``query``, [CLS]/[SEP] framed, each within the context (else a 400)."""
        return await self._require_inputs().encode(items, query=query, truncate=truncate)

    async def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[Encoding]:
        """Plain texts as encodings, over-long ones kept whole unless ``truncate`` (see ``encode``, which refuses)."""
        return await self._require_inputs().tokenize(texts, truncate=truncate)

    async def tokens(self, texts: Sequence[str], *, add_special_tokens: bool, query: bool) -> list[list[Token]]:
        """Each text's tokens with their character offsets (``/tokenize``); nothing truncated, nothing refused."""
        instruction = self.settings.query_instruction if query else ""
        return await asyncio.to_thread(
            self._require_tokenizer().tokens,
            list(texts),
            add_special_tokens=add_special_tokens,
            instruction=instruction,
        )

    async def decode(self, id_lists: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        """The model's WordPiece ids back to text (``/decode``)."""
        return await asyncio.to_thread(
            self._require_tokenizer().decode, id_lists, skip_special_tokens=skip_special_tokens
        )

    def encode_token_ids(self, ids: Sequence[Sequence[int]], *, truncate: bool) -> list[Encoding]:
        return self._require_inputs().encode_token_ids(ids, truncate=truncate)

    async def embed(
        self,
        encodings: Sequence[Encoding],
        *,
        priority: Priority = Priority.ONLINE,
        timing: EmbedTiming | None = None,
    ) -> npt.NDArray[np.float32]:
        """``(n, dim)`` float32 rows in input order. Cancelling the caller cancels its queued inputs.
        ``Priority.BULK`` work (batch jobs) runs only when no online work waits. The encodings come from ``encode``,
        which has checked them against the model's context. ``timing``, if given, is filled with the call's queue
        and forward-pass time."""
        if not encodings:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        futures = self._require_scheduler().submit(encodings, priority=priority, timing=timing)
        try:
            rows = await asyncio.gather(*futures)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        return np.stack(rows).astype(np.float32, copy=False)

    async def ready(self) -> bool:
        """A tiny forward pass ([CLS] [SEP]) on the inference thread succeeds and gives finite numbers."""
        scheduler = self._require_scheduler()
        backend, info = self._backend, self.info
        assert backend is not None
        ids, mask = pad_batch([Encoding(ids=(info.cls_token_id, info.sep_token_id))], pad_id=info.pad_token_id)
        try:
            out = await scheduler.run_sync(lambda: backend.forward(ids, mask))
        except Exception:
            logger.exception("readiness forward pass failed")
            return False
        return bool(out.shape == (1, info.dim) and np.isfinite(out).all())

    def embed_texts(self, texts: Sequence[str], *, truncate: bool = False) -> npt.NDArray[np.float32]:
        """Synchronous convenience for scripts and batch jobs: start (once), tokenise and embed."""
        return asyncio.run(self._embed_once(texts, truncate=truncate))

    async def _embed_once(self, texts: Sequence[str], *, truncate: bool) -> npt.NDArray[np.float32]:
        await self.start()
        try:
            encoded = await self.encode(list(texts), query=False, truncate=truncate)
            return await self.embed(encoded.encodings)
        finally:
            await self.stop()

    def _require_tokenizer(self) -> WordPieceTokenizer:
        if self._tokenizer is None:
            raise EngineError("The engine has not been started.")
        return self._tokenizer

    def _require_inputs(self) -> InputEncoder:
        if self._inputs is None:
            raise EngineError("The engine has not been started.")
        return self._inputs

    def _require_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise EngineError("The engine is not running.")
        return self._scheduler
