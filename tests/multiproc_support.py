"""A real engine process (``--api-processes``'s, on the fake backend) for tests that put the app in front of it with
a ``RemoteEngine``: optionally slow (to fill its queue) and failing on the ids of ``FAIL`` (inference errors)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedserve.engine.backends.fake import FakeBackend
from embedserve.engine.engine import Engine
from embedserve.engine.engine_process import serve_engine
from embedserve.engine.model_info import ModelInfo
from embedserve.engine.remote import RemoteEngine
from embedserve.settings import EngineSettings
from tests.gateway_stub_engine import fail_token_ids


class SlowFakeBackend(FakeBackend):
    def __init__(self, *, dim: int, fail_on: frozenset[int], delay: float) -> None:
        super().__init__(dim=dim, fail_on=fail_on)
        self.delay = delay

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        time.sleep(self.delay)
        return super().forward(input_ids, attention_mask)


def _run(settings: EngineSettings, endpoint: str, conn: Connection, delay: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    backend = SlowFakeBackend(dim=1024, fail_on=fail_token_ids(), delay=delay)
    asyncio.run(serve_engine(Engine(settings, backend=backend), endpoint=endpoint, conn=conn, shutdown_timeout=10))


@dataclass
class EngineProcess:
    process: BaseProcess
    endpoint: str
    info: ModelInfo
    tokenizer_path: Path

    def client(self, settings: EngineSettings) -> RemoteEngine:
        return RemoteEngine(settings, endpoint=self.endpoint, info=self.info, tokenizer_path=self.tokenizer_path)


@contextmanager
def engine_process(settings: EngineSettings, *, delay: float = 0.0) -> Iterator[EngineProcess]:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="embedserve-test-") as folder:
        endpoint = f"ipc://{folder}/engine.sock"
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_run, args=(settings, endpoint, sender, delay))
        process.start()
        sender.close()
        try:
            if not receiver.poll(120):
                raise TimeoutError("the engine process did not start")
            status, info, tokenizer_path = receiver.recv()
            assert status == "ready", info
            yield EngineProcess(process, endpoint, info, Path(tokenizer_path))
        finally:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
            process.join(20)
            if process.is_alive():
                process.kill()
                process.join(5)
