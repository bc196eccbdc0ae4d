"""A compact BERT encoder in PyTorch whose parameter names match Hugging Face ``BertModel`` checkpoints.

Attention is ``scaled_dot_product_attention`` with the padding mask; every projection is a plain ``nn.Linear`` so
faster paths (bf16, int8) can swap layers without touching the graph. A batch with much padding runs every
token-wise layer (projections, LayerNorm, GELU) on its real tokens only (``Packing``); attention alone sees it padded.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import torch
import torch.nn.functional as F
from torch import nn

from embedserve.engine.loading import BertConfig, LoadedModel
from embedserve.errors import ModelLoadError


class Packing:
    """Where a padded batch's real tokens sit: token-wise layers run on the ``(tokens, hidden)`` rows only, and
    attention, which needs whole sequences, gets them scattered back into the padded ``(batch * seq, hidden)``."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.rows = attention_mask.numel()
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.rows, x.shape[-1]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(self.rows, x.shape[-1]).index_copy_(0, self.index, x)


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)  # type: ignore[no-any-return]


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv: nn.Module | None = None  # set by fuse_qkv: one projection to [query | key | value]
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def fuse_qkv(self) -> None:
        """Replace the three projections by one ``nn.Linear`` with their weights stacked: the same arithmetic in one
        matmul over the input instead of three (and, in the int8 path, one quantisation of the input instead of
        three). Loading a checkpoint must come first: the HF parameter names are gone afterwards."""
        parts = [self.query, self.key, self.value]
        fused = nn.Linear(parts[0].in_features, 3 * parts[0].out_features, device=parts[0].weight.device)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([p.weight for p in parts]))
            fused.bias.copy_(torch.cat([p.bias for p in parts]))
        self.qkv = fused.to(parts[0].weight.dtype)
        del self.query, self.key, self.value

    def forward(self, x: torch.Tensor, mask: torch.Tensor, packing: Packing | None = None) -> torch.Tensor:
        b, s = mask.shape[0], mask.shape[-1]
        h = x.shape[-1]
        d = h // self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            if packing is not None:
                t = packing.pad(t)
            return t.view(b, s, -1, self.num_heads, d).transpose(1, 3)  # (b, heads, parts, s, d)

        if self.qkv is not None:
            q, k, v = heads(self.qkv(x)).unbind(2)
        else:
            q, k, v = (heads(proj(x)).squeeze(2) for proj in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, s, h)
        return out if packing is None else packing.pack(out)


class SelfOutput(nn.Module):
    def __init__(self, cfg: BertConfig, in_features: int) -> None:
        super().__init__()
        self.dense: nn.Module = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)  # type: ignore[no-any-return]


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = SelfOutput(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, packing: Packing | None = None) -> torch.Tensor:
        return self.output(self.self(x, mask, packing), x)  # type: ignore[no-any-return]


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        if cfg.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"unsupported activation {cfg.hidden_act}")
        self.approximate = "none" if cfg.hidden_act == "gelu" else "tanh"
        self.dense: nn.Module = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act: nn.Module = nn.GELU(approximate=self.approximate)  # no parameters: checkpoint names unchanged

    def fuse_activation(self, dense: nn.Module) -> None:
        """Swap in a projection that applies this GELU itself (``PrepackedLinear(..., gelu=self.approximate)``); the
        separate activation becomes the identity. A projection that does not say it applies the same GELU is
        refused, so the activation cannot be lost or changed silently."""
        if getattr(dense, "gelu", None) != self.approximate:
            raise ValueError(f"{type(dense).__name__} does not apply GELU(approximate={self.approximate!r})")
        self.dense = dense
        self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # type: ignore[no-any-return]


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = SelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, packing: Packing | None = None) -> torch.Tensor:
        x = self.attention(x, mask, packing)
        return self.output(self.intermediate(x), x)  # type: ignore[no-any-return]


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))


class BertEncoder(nn.Module):
    """``(batch, seq)`` ids and 0/1 mask -> ``(batch, seq, hidden)`` last hidden states."""

    unpad_ratio: float = 1.08
    """Run the token-wise layers on the real tokens only once the padded batch is this many times their count: the
    scatter and gather around attention cost a few percent (bge-large, 2 cores, bf16: 1.33x faster at 1.63, 1.08x at
    1.11, 0.95x at 1.06; docs/internals.md, "Packing"). ONNX export sets it to infinity for a static graph."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x, mask, packing = self._embed(input_ids, attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, mask, packing)
        return x if packing is None else packing.pad(x).view(*attention_mask.shape, -1)

    def steps(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Generator[None, None, torch.Tensor]:
        """``forward`` one layer per step: yields after each layer, returns the last hidden states. A caller may run
        other passes between steps (the scheduler pauses a batch job's pass there when online work arrives)."""
        x, mask, packing = self._embed(input_ids, attention_mask)
        for layer in self.encoder.layer:
            x = layer(x, mask, packing)
            yield
        return x if packing is None else packing.pad(x).view(*attention_mask.shape, -1)

    def _embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Packing | None]:
        """The embeddings (packed to the real tokens when there is enough padding), the additive attention mask,
        and the packing, if any."""
        x = self.embeddings(input_ids)
        # Additive mask in the activations' dtype: padded keys get -inf-like scores and no weight.
        mask = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        packing = None
        if math.isfinite(self.unpad_ratio):
            real = int(attention_mask.sum())
            if real and attention_mask.numel() >= self.unpad_ratio * real:
                packing = Packing(attention_mask)
                x = packing.pack(x)
        return x, mask, packing


def fuse_qkv(model: BertEncoder) -> None:
    """``SelfAttention.fuse_qkv`` in every layer."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.fuse_qkv()


def init_dummy_weights(model: BertEncoder, *, seed: int, std: float = 0.02) -> None:
    """Seeded random weights like HF's initialiser: N(0, std) matrices, zero biases, unit LayerNorms."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.normal_(0.0, std, generator=gen)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def load_state(model: BertEncoder, state: dict[str, torch.Tensor]) -> None:
    """Load an HF checkpoint (``bert.``-prefixed or not; the pooler is unused and ignored)."""
    cleaned = {k.removeprefix("bert."): v for k, v in state.items()}
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith(("pooler.", "cls.")) and "position_ids" not in k}
    missing, unexpected = model.load_state_dict(cleaned, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")


def build_encoder(model: LoadedModel) -> BertEncoder:
    """The encoder with ``model``'s weights (or seeded random ones for ``--load-format dummy``), in eval mode."""
    encoder = BertEncoder(model.config)
    if model.weights_path is None:
        init_dummy_weights(encoder, seed=model.seed)
    else:
        from safetensors.torch import load_file

        try:
            load_state(encoder, load_file(str(model.weights_path)))
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load {model.weights_path}: {exc}") from None
    return encoder.eval()
