"""CUDA graphs for the small passes a GPU runs launch-bound (``--cuda-graphs``, torch backend on CUDA, opt-in).

Below a few thousand tokens a bge-large pass on a GPU costs what its ~400 kernel launches cost, not what its
arithmetic does: on an H200 one 10-token text took 5.8 ms and a profile of 32 x 12 tokens spent 11 ms of CPU time
against 1.7 ms of GPU time (docs/performance.md, GPU). A CUDA graph records one pass's kernels once and replays them
with a single launch. A graph is fixed to its shapes, so each is captured for a *bucket*: ``rows`` texts padded to
``seq`` tokens. A batch is padded up to the smallest bucket that holds it (extra tokens masked out, extra rows
discarded), its ids and mask are copied into that graph's input tensors, the graph replays, and the first rows of its
pooled output are the batch's vectors. Padding costs nothing there: the pass is launch-bound. Batches past the largest
bucket (``GRAPH_MAX_TOKENS`` padded tokens) run eagerly, as without graphs.

Every bucket is captured when the backend is built (one shared memory pool, largest first), so the first request of a
shape pays nothing. The bucket arithmetic and padding are plain numpy and are tested on any machine, with the
property the graphs rely on (a batch padded to its bucket gives the same vectors); capture and replay need a GPU
(``tests/model/test_gpu.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

GRAPH_MAX_TOKENS = 4096
"""Padded tokens of the largest bucket: the H200 ran one 10-token text in 5.8 ms and 32 x 128 tokens in 6.7 ms, so up
to here a pass is launch-bound (the same size as the scheduler's free padding on CUDA)."""

GRAPH_SEQ_LENGTHS = (16, 32, 64, 128, 256, 512)
"""Sequence lengths a bucket may have (the model's context, if shorter than the last, replaces the longer ones)."""

Buckets = tuple[tuple[int, int], ...]
IdsAndMask = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def graph_buckets(*, max_tokens: int, max_seq: int, max_rows: int) -> Buckets:
    """Every ``(rows, seq)`` bucket: rows a power of two up to ``max_rows``, seq one of ``GRAPH_SEQ_LENGTHS`` capped
    at ``max_seq``, and ``rows * seq`` at most ``max_tokens``. Smallest first."""
    seqs = sorted({min(s, max_seq) for s in GRAPH_SEQ_LENGTHS})
    buckets = []
    for seq in seqs:
        rows = 1
        while rows <= max_rows and rows * seq <= max_tokens:
            buckets.append((rows, seq))
            rows *= 2
    return tuple(sorted(buckets, key=lambda b: (b[0] * b[1], b)))


def bucket_for(buckets: Iterable[tuple[int, int]], rows: int, seq: int) -> tuple[int, int] | None:
    """The smallest bucket (fewest padded tokens) holding ``rows`` texts of ``seq`` tokens; None past the largest."""
    fits = [b for b in buckets if b[0] >= rows and b[1] >= seq]
    return min(fits, key=lambda b: (b[0] * b[1], b)) if fits else None


def pad_to_bucket(
    ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], bucket: tuple[int, int], pad_id: int
) -> IdsAndMask:
    """``ids``/``mask`` padded to ``bucket``'s shape: extra tokens are ``pad_id`` with mask 0, as ``pad_batch`` pads
    within a batch. Extra rows are one visible pad token each (an all-zero mask row would be all padding, which
    attention handles by overflow in fp16), and their vectors are discarded."""
    rows, seq = ids.shape
    out_ids = np.full(bucket, pad_id, dtype=np.int64)
    out_mask = np.zeros(bucket, dtype=np.int64)
    out_ids[:rows, :seq] = ids
    out_mask[:rows, :seq] = mask
    out_mask[rows:, 0] = 1
    return out_ids, out_mask


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    ids: torch.Tensor
    mask: torch.Tensor
    out: torch.Tensor


class CudaGraphs:
    """One captured pass of ``run`` (ids and mask on the device -> pooled vectors on the device) per bucket.

    Build and call it inside the same ``torch.inference_mode()`` and attention-kernel settings the eager pass uses.
    ``forward`` returns None for a batch past the largest bucket: the caller runs that one eagerly."""

    def __init__(
        self,
        run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        device: torch.device,
        buckets: Buckets,
        pad_id: int,
    ) -> None:
        self._pad_id = pad_id
        self._device = device
        self._graphs: dict[tuple[int, int], _Graph] = {}
        # One pool for every graph, captured largest first so the smaller ones reuse its memory. Replays may then
        # come in any order, which is more than PyTorch documents for a shared pool: it holds here because they never
        # overlap (one inference thread) and each holds on to its own output tensor, which no other graph's capture
        # could take, and that output is copied to the host before the next replay.
        with torch.cuda.device(device):  # capture streams and the pool on the model's GPU, also for cuda:N
            self._pool = torch.cuda.graph_pool_handle()
            self._side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
            for bucket in sorted(buckets, key=lambda b: -b[0] * b[1]):
                self._graphs[bucket] = self._capture(run, bucket)

    def _capture(self, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bucket: tuple[int, int]) -> _Graph:
        ids_np, mask_np = pad_to_bucket(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64), bucket, self._pad_id)
        ids = torch.from_numpy(ids_np).to(self._device)
        mask = torch.from_numpy(mask_np).to(self._device)
        self._side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self._side):  # warm-up off the capture: lazy initialisation must not be recorded
            for _ in range(2):
                run(ids, mask)
        torch.cuda.current_stream().wait_stream(self._side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = run(ids, mask)
        return _Graph(graph, ids, mask, out)

    def forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32] | None:
        bucket = bucket_for(self._graphs, *ids.shape)
        if bucket is None:
            return None
        graph = self._graphs[bucket]
        padded_ids, padded_mask = pad_to_bucket(ids, mask, bucket, self._pad_id)
        with torch.cuda.device(self._device):
            graph.ids.copy_(torch.from_numpy(padded_ids))
            graph.mask.copy_(torch.from_numpy(padded_mask))
            graph.graph.replay()
            # to the host now: the next replay of this graph writes the same output tensor
            return graph.out[: ids.shape[0]].cpu().numpy().astype(np.float32, copy=False)
