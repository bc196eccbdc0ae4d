"""Sentence pooling over the last hidden states (CLS or mask-weighted mean), then optional L2 normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from embedserve.engine.model_info import Pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, *, mode: Pooling, normalize: bool) -> torch.Tensor:
    """``(batch, seq, hidden)`` -> ``(batch, hidden)`` float32."""
    if mode == "cls":
        pooled = hidden[:, 0].float()
    else:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1) if normalize else pooled
