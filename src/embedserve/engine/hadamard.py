"""Orthogonal Hadamard rotations for int8 activations (QuaRot-style): ``T x`` online, ``W T^T`` folded offline.

A linear layer computes the same product on rotated operands, ``W x = (W T^T)(T x)`` for orthogonal ``T``, but the
rotated activation spreads each outlier channel over all channels, so a per-token int8 scale no longer spends its
range on a few of them. ``T`` is a normalised Hadamard matrix. Widths that are not a power of two use
``H_m (x) H_(2^k)`` where a Hadamard matrix of order ``m`` is known (12 and 20, Paley's construction: MiniLM's 384 and
1536 are 12 x 2^k) and the block-diagonal ``I_m (x) H_(2^k)`` otherwise (orthogonal too, mixing within blocks only).
Online, ``H_(2^k)`` is applied as Sylvester's ``H_a (x) H_b`` (``a * b = 2^k``): two small matrix products,
``X -> H_a X H_b`` on each ``a x b`` view of a row. On a Zen 4 (2 cores, 2048 x 4096 fp32, bge-large's FFN-out
input) that took 25 ms where the fast Walsh-Hadamard transform's ``log2 n`` butterfly passes (``fwht``, kept as the
reference) took 190 ms. With a ``seed``,
``T = H D`` for a seeded random +-1 diagonal ``D`` (QuaRot's randomised Hadamard): still orthogonal, one more
elementwise pass online, and a different spreading of the outliers per seed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_PALEY_PRIMES = (11, 19)  # q = 3 (mod 4): Paley I gives a Hadamard matrix of order q + 1 (12, 20)


def paley_hadamard(q: int) -> torch.Tensor:
    """The order-``q+1`` Hadamard matrix of Paley's first construction (``q`` prime, ``q = 3 mod 4``), entries +-1."""
    chi = [0] + [1 if pow(a, (q - 1) // 2, q) == 1 else -1 for a in range(1, q)]
    h = torch.empty(q + 1, q + 1)
    h[0, 0] = 0.0
    h[0, 1:] = 1.0
    h[1:, 0] = -1.0
    for i in range(q):
        for j in range(q):
            h[i + 1, j + 1] = float(chi[(j - i) % q])
    return h + torch.eye(q + 1)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform of the last dimension (a power of two): ``x @ H`` with Sylvester's
    ``H``, in ``log2 n`` passes of adds and subtracts on views (no n x n matrix)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two width, got {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n).contiguous()
    h = 1
    while h < n:
        pairs = y.view(y.shape[0], n // (2 * h), 2, h)
        a, b = pairs[:, :, 0], pairs[:, :, 1]
        y = torch.stack((a + b, a - b), dim=2).view(-1, n)
        h *= 2
    return y.reshape(*lead, n)


def _split(n: int) -> tuple[int, int]:
    """``n = m * 2^k`` with ``2^k`` the largest power of two dividing ``n``: ``(m, 2^k)``."""
    power = n & -n
    return n // power, power


def sylvester(n: int) -> torch.Tensor:
    """Sylvester's ``n x n`` Hadamard matrix (``n`` a power of two), entries +-1."""
    return fwht(torch.eye(n))


def _kron_split(p: int) -> tuple[int, int]:
    """``p = a * b``, both powers of two, as near square as can be (``a <= b``)."""
    a = 1 << (p.bit_length() - 1) // 2
    return a, p // a


class HadamardRotation(nn.Module):
    """``x -> T x`` on the last dimension, ``T`` orthogonal: ``(H_m (x) H_p) / sqrt(n)`` when a Hadamard matrix of
    order ``m`` is at hand (``m`` = 1, or ``n`` = 12 or 20 times a power of two), else ``I_m (x) H_p``.
    ``mix=False`` forces the block-diagonal form; ``seed`` flips the input's signs first (``T = H D``)."""

    dense: torch.Tensor | None
    signs: torch.Tensor | None
    h_a: torch.Tensor
    h_b: torch.Tensor

    def __init__(self, n: int, *, mix: bool = True, seed: int | None = None) -> None:
        super().__init__()
        m, p = _split(n)
        dense = None
        for q in _PALEY_PRIMES if mix and m > 1 else ():
            order = q + 1
            if n % order == 0 and (n // order) & (n // order - 1) == 0:
                dense, m, p = paley_hadamard(q), order, n // order
                break
        self.n, self.blocks, self.width = n, m, p
        a, b = _kron_split(p)
        self.register_buffer("h_a", sylvester(a))  # H_p = H_a (x) H_b
        self.register_buffer("h_b", sylvester(b))
        self.register_buffer("dense", None if dense is None else dense / math.sqrt(m))
        self.scale = 1.0 / math.sqrt(p)
        self.register_buffer("signs", None if seed is None else random_signs(n, seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        if self.signs is not None:
            x = x * self.signs.to(x.dtype)
        a, b = self.h_a.shape[0], self.h_b.shape[0]
        y = x.reshape(-1, self.blocks, a, b) @ self.h_b.to(x.dtype)  # H_b along each row of the a x b view
        if a > 1:
            y = torch.matmul(self.h_a.to(x.dtype), y)  # H_a along its columns
        y = y.reshape(-1, self.blocks, self.width) * self.scale
        if self.dense is not None:
            y = torch.matmul(self.dense.to(y.dtype), y)  # H_m across the blocks
        return y.reshape(*lead, self.n)

    def matrix(self) -> torch.Tensor:
        """``T`` itself (n x n), for tests and offline folding checks."""
        return self.forward(torch.eye(self.n)).t()


def random_signs(n: int, seed: int) -> torch.Tensor:
    """``n`` entries of +-1, the same for the same seed on every machine (torch's CPU generator)."""
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed))
    return bits.float().mul_(2.0).sub_(1.0)


def fold_rotation(weight: torch.Tensor, rotation: HadamardRotation) -> torch.Tensor:
    """``W T^T`` for an ``(out, in)`` weight: row ``i`` of it is ``T w_i``, so the rotation itself folds it."""
    return rotation.forward(weight)
