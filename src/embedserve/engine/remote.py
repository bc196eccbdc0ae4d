"""``RemoteEngine``: the ``EmbeddingEngine`` of an API process under ``--api-processes N``. Tokenisation, token-id
reading and the context check run here, on this process's own tokenizer; only encodings go to the engine process
and float32 rows come back, as raw buffers over ZeroMQ (``engine/ipc.py``).

While the engine process is not connected (it died and is being restarted) every request and ``ready`` fails at once
with a 503 in the OpenAI envelope; requests in flight when it goes away fail the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from embedserve.engine import ipc
from embedserve.engine.encoding import Encoding, Token
from embedserve.engine.inputs import Encoded, InputEncoder, Items
from embedserve.engine.model_info import ModelInfo
from embedserve.engine.scheduler import EmbedTiming, Priority
from embedserve.engine.token_ids import cl100k
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import ServiceUnavailableError
from embedserve.settings import EngineSettings

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
ENGINE_DOWN = "The engine process is not running (it is being restarted); retry shortly."


def engine_down() -> ServiceUnavailableError:
    return ServiceUnavailableError(ENGINE_DOWN, retry_after_s=1)


class RemoteEngine:
    def __init__(self, settings: EngineSettings, *, endpoint: str, info: ModelInfo, tokenizer_path: Path) -> None:
        self.settings = settings
        self._endpoint = endpoint
        self._info = info
        self._tokenizer_path = tokenizer_path
        self._tokenizer: WordPieceTokenizer | None = None
        self._inputs: InputEncoder | None = None
        self._context: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._pending: dict[int, asyncio.Future[list[zmq.Frame]]] = {}
        self._seq = itertools.count(1)
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._queue = (0, 0)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def queue_depth(self) -> int:
        """The engine's queue as its latest reply to this process reported it."""
        return self._queue[0]

    @property
    def queued_tokens(self) -> int:
        return self._queue[1]

    async def start(self) -> None:
        """Load the tokenizer, connect, and wait (bounded) for the engine process to answer the handshake."""
        if self._sock is not None:
            return
        info = self._info
        self._tokenizer = await asyncio.to_thread(WordPieceTokenizer, self._tokenizer_path, vocab_size=info.vocab_size)
        if self.settings.token_ids in ("auto", "tiktoken"):
            await asyncio.to_thread(cl100k)
        self._inputs = InputEncoder(self._tokenizer, self.settings, max_tokens=info.max_tokens)
        self._context = zmq.asyncio.Context()
        sock = self._sock = self._context.socket(zmq.DEALER)
        for option in (zmq.SNDHWM, zmq.RCVHWM, zmq.LINGER):
            sock.setsockopt(option, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for an engine that is not there: refuse at once
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        sock.connect(self._endpoint)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._watch(monitor))]
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT_S)
        except TimeoutError:
            logger.warning(
                "the engine process did not answer within %.0f s; serving 503 until it does", CONNECT_TIMEOUT_S
            )

    async def stop(self, *, timeout: float | None = None) -> None:
        if self._pending:
            await asyncio.wait(set(self._pending.values()), timeout=timeout)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._fail_pending()
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._context is not None:
            self._context.term()
            self._context = None

    async def ready(self) -> bool:
        """The engine process answers and its tiny forward pass succeeds."""
        try:
            seq = next(self._seq)
            frames = await self._call(seq, ipc.control_request(ipc.Kind.READY, seq))
        except ServiceUnavailableError:
            return False
        return bytes(frames[1].buffer) == b"\x01"

    async def encode(self, items: Items, *, query: bool, truncate: bool) -> Encoded:
        return await self._require_inputs().encode(items, query=query, truncate=truncate)

    async def tokens(self, texts: Sequence[str], *, add_special_tokens: bool, query: bool) -> list[list[Token]]:
        instruction = self.settings.query_instruction if query else ""
        tok = self._require_tokenizer()
        return await asyncio.to_thread(
            tok.tokens, list(texts), add_special_tokens=add_special_tokens, instruction=instruction
        )

    async def decode(self, id_lists: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        tok = self._require_tokenizer()
        return await asyncio.to_thread(tok.decode, id_lists, skip_special_tokens=skip_special_tokens)

    async def embed(
        self,
        encodings: Sequence[Encoding],
        *,
        priority: Priority = Priority.ONLINE,
        timing: EmbedTiming | None = None,
    ) -> npt.NDArray[np.float32]:
        """``(n, dim)`` float32 rows, a read-only view of the received buffer. Cancelling the caller cancels its
        inputs in the engine's queue, as in one process. ``timing`` gets what the engine process measured."""
        if not encodings:
            return np.zeros((0, self._info.dim), dtype=np.float32)
        seq = next(self._seq)
        frames = await self._call(seq, ipc.embed_request(seq, encodings, priority=priority))
        if timing is not None:
            header = ipc.parse_reply_header(frames[0].buffer)
            timing.queue_seconds, timing.inference_seconds = header.queue_seconds, header.inference_seconds
        return ipc.parse_vectors(frames[1].buffer, dim=self._info.dim)

    async def _call(self, seq: int, request: list[ipc.Buffer]) -> list[zmq.Frame]:
        if not self.connected or self._sock is None:
            raise engine_down()
        future: asyncio.Future[list[zmq.Frame]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            await self._sock.send_multipart(request, copy=False)
            return await future
        except asyncio.CancelledError:
            if self.connected and self._sock is not None:  # best effort: the engine skips what it has not run yet
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.send_multipart(ipc.control_request(ipc.Kind.CANCEL, seq), flags=zmq.NOBLOCK)
            raise
        except zmq.Again:
            raise engine_down() from None
        finally:
            self._pending.pop(seq, None)

    async def _receive(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            header = ipc.parse_reply_header(frames[0].buffer)
            self._queue = (header.queue_depth, header.queued_tokens)
            future = self._pending.get(header.seq)
            if future is None or future.done():
                continue  # its caller went away
            if header.status is ipc.Status.ERROR:
                future.set_exception(ipc.parse_error(frames[1].buffer))
            else:
                future.set_result(frames)

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        try:
            while True:
                event = (await recv_monitor_message(monitor))["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    logger.info("connected to the engine process")
                    self._connected.set()
                elif event == zmq.EVENT_DISCONNECTED:
                    logger.error("the engine process went away; answering 503 until it is back")
                    self._connected.clear()
                    self._fail_pending()
        finally:
            monitor.close(linger=0)

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(engine_down())

    def _require_tokenizer(self) -> WordPieceTokenizer:
        if self._tokenizer is None:
            raise ServiceUnavailableError("The engine has not been started.")
        return self._tokenizer

    def _require_inputs(self) -> InputEncoder:
        if self._inputs is None:
            raise ServiceUnavailableError("The engine has not been started.")
        return self._inputs
