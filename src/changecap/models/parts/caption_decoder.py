"""Transformer caption decoder of HiSem / RSCaMa (``docs/hisem.md``), with a key/value cache for generation.

The function is the official ``DecoderTransformer('transformer_decoder')``: word embedding + fixed sinusoidal
positions (no √D scaling) → N post-norm decoder layers, each with an extra outer residual ``out = h3 + x`` from the
layer input → dropout → untied output Linear. Parameters are laid out so that the official ``decoder_dict`` maps
onto this module one to one (only the names differ, see :data:`OFFICIAL_NAME_MAP`).

Two entry points compute the same function:

* :meth:`TransformerCaptionDecoder.forward` — teacher forcing over a whole padded caption (training, scoring);
* :meth:`TransformerCaptionDecoder.init_cache` + :meth:`TransformerCaptionDecoder.step` — one token at a time with
  cached self-attention keys/values and cross-attention keys/values of the memory computed once per generation.

:meth:`TransformerCaptionDecoder.cross_attention` reads out where the decoder looked: the last layer's
cross-attention weights over the memory, averaged over its heads, for every position of a given caption.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.data.vocab import END_ID, NULL_ID
from changecap.errors import ModelError
from changecap.models.parts.attention import MultiheadAttention
from changecap.models.precision import Fp32Linear
from changecap.schema import from_dict, require

#: our parameter name → official ``decoder_dict`` name (``{i}`` = layer index); used by the checkpoint converter
OFFICIAL_NAME_MAP: dict[str, str] = {
    "word_embedding.weight": "vocab_embedding.weight",
    "position_encoding.pe": "position_encoding.pe",
    "position_encoding.embedding_1D.weight": "position_encoding.embedding_1D.weight",
    "layers.{i}.self_attn.in_proj_weight": "transformer.layers.{i}.self_attn.in_proj_weight",
    "layers.{i}.self_attn.in_proj_bias": "transformer.layers.{i}.self_attn.in_proj_bias",
    "layers.{i}.self_attn.out_proj.weight": "transformer.layers.{i}.self_attn.out_proj.weight",
    "layers.{i}.self_attn.out_proj.bias": "transformer.layers.{i}.self_attn.out_proj.bias",
    "layers.{i}.cross_attn.in_proj_weight": "transformer.layers.{i}.multihead_attn.in_proj_weight",
    "layers.{i}.cross_attn.in_proj_bias": "transformer.layers.{i}.multihead_attn.in_proj_bias",
    "layers.{i}.cross_attn.out_proj.weight": "transformer.layers.{i}.multihead_attn.out_proj.weight",
    "layers.{i}.cross_attn.out_proj.bias": "transformer.layers.{i}.multihead_attn.out_proj.bias",
    "layers.{i}.linear1.weight": "transformer.layers.{i}.linear1.weight",
    "layers.{i}.linear1.bias": "transformer.layers.{i}.linear1.bias",
    "layers.{i}.linear2.weight": "transformer.layers.{i}.linear2.weight",
    "layers.{i}.linear2.bias": "transformer.layers.{i}.linear2.bias",
    **{
        f"layers.{{i}}.{m}{j}.{p}": f"transformer.layers.{{i}}.{m}{j}.{p}"
        for m in ("norm", "fc_alpha")  # fc_alpha1..3 only exist with official_unused_params
        for j in (1, 2, 3)
        for p in ("weight", "bias")
    },
    "output_proj.weight": "wdc.weight",
    "output_proj.bias": "wdc.bias",
}

#: rows of the official never-used ``position_encoding.embedding_1D`` table
OFFICIAL_EMBEDDING_1D_ROWS = 52


@dataclass
class CaptionDecoderConfig:
    """Hyperparameters of :class:`TransformerCaptionDecoder` (paper values: 768, 501, 41, 1, 8, 4, 0.1)."""

    dim: int  # d_model; must equal the fusion output width
    vocab_size: int  # V, size of vocab.json (ids are the vocabulary's)
    max_length: int = 41  # rows of the sinusoidal table = most token positions the decoder can read
    layers: int = 1
    heads: int = 8
    ffn_mult: int = 4  # FFN hidden = ffn_mult · dim
    dropout: float = 0.1  # PE, attention weights, sub-layers, FFN inner, before the output layer
    official_unused_params: bool = False  # create the never-read fc_alpha1..3 and embedding_1D (exact official count)

    def validate(self, prefix: str = "decoder") -> None:
        require(self.dim > 0, f"{prefix}.dim", f"must be > 0, got {self.dim}")
        require(self.vocab_size >= 4, f"{prefix}.vocab_size", f"must be >= 4 (special tokens), got {self.vocab_size}")
        require(self.max_length >= 2, f"{prefix}.max_length", f"must be >= 2, got {self.max_length}")
        require(self.layers >= 1, f"{prefix}.layers", f"must be >= 1, got {self.layers}")
        require(self.heads >= 1, f"{prefix}.heads", f"must be >= 1, got {self.heads}")
        require(self.dim % self.heads == 0, f"{prefix}.heads", f"dim {self.dim} is not divisible by {self.heads} heads")
        require(self.ffn_mult >= 1, f"{prefix}.ffn_mult", f"must be >= 1, got {self.ffn_mult}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "decoder") -> CaptionDecoderConfig:
        return from_dict(cls, d, prefix)


def sinusoidal_table(max_length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal positions [max_length, 1, dim] (sin on even, cos on odd channels), built in float64."""
    position = torch.arange(max_length, dtype=torch.float64).unsqueeze(1)  # [T, 1]
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))  # [ceil(D/2)]
    pe = torch.zeros(max_length, dim, dtype=torch.float64)  # [T, D]
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)[:, : dim // 2]
    return pe.unsqueeze(1).float()  # [T, 1, D] (official layout: sequence-first)


class SinusoidalPositionEncoding(nn.Module):
    """Adds fixed sinusoidal positions (without √D scaling), then dropout.

    ``pe`` is a persistent buffer in the official sequence-first layout [max_length, 1, D] so that a converted
    checkpoint carries the exact table it was trained with.
    """

    def __init__(self, dim: int, max_length: int, dropout: float, official_unused_params: bool = False) -> None:
        super().__init__()
        self.max_length = max_length
        self.register_buffer("pe", sinusoidal_table(max_length, dim))
        self.dropout = nn.Dropout(dropout)
        if official_unused_params:
            # never read by the official forward pass; exists only to reproduce the official state dict / count
            self.embedding_1D = nn.Embedding(OFFICIAL_EMBEDDING_1D_ROWS, dim)

    def forward(self, x: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        """``x`` [B, T, D] holding positions ``offset … offset+T-1`` → same shape.

        ``offset`` may be a one-element long tensor (T = 1): the position of a traced graph's step (ONNX), which is
        an input there, not a Python number; its range is the caller's to keep (``decoding`` checks it)."""
        if isinstance(offset, torch.Tensor):
            pos = self.pe.index_select(0, offset).transpose(0, 1)  # [1, 1, D]
            return self.dropout(x + pos.to(x.dtype))
        t = x.shape[1]
        if offset + t > self.max_length:
            raise ModelError(
                f"decoder input reaches position {offset + t} but the decoder was built with max_length="
                f"{self.max_length} positions"
            )
        pos = self.pe[offset : offset + t].transpose(0, 1)  # [1, T, D]
        return self.dropout(x + pos.to(x.dtype))


@dataclass
class DecoderCache:
    """Incremental-decoding state of :class:`TransformerCaptionDecoder`.

    Hypotheses (rows of the self-attention cache) are grouped by item: ``N = items · group`` with the ``group``
    hypotheses (beams) of one item adjacent. The cross-attention keys/values are stored once per *item*
    ([items, H, L, Dh]); during a step the ``group`` queries of an item are attended together as ``group`` query
    positions, so beams never duplicate the memory.
    """

    group: int  # hypotheses per item (1 for greedy, beam size for beam search)
    self_keys: list[torch.Tensor]  # per layer [N, H, t, Dh]
    self_values: list[torch.Tensor]  # per layer [N, H, t, Dh]
    cross_keys: list[torch.Tensor]  # per layer [items, H, L, Dh]
    cross_values: list[torch.Tensor]  # per layer [items, H, L, Dh]
    key_valid: torch.Tensor  # [N, t] bool, False for <NULL> keys (the official inference key-padding mask)

    @property
    def length(self) -> int:
        """Number of tokens already fed (= position of the next token)."""
        return int(self.key_valid.shape[1])

    @property
    def items(self) -> int:
        return int(self.cross_keys[0].shape[0])

    def reorder(self, hyp_index: torch.Tensor) -> None:
        """Select hypotheses ``hyp_index`` [N] (flat indices; each must stay inside its own item's group)."""
        self.self_keys = [k.index_select(0, hyp_index) for k in self.self_keys]
        self.self_values = [v.index_select(0, hyp_index) for v in self.self_values]
        self.key_valid = self.key_valid.index_select(0, hyp_index)

    def keep_items(self, item_index: torch.Tensor) -> None:
        """Keep only items ``item_index`` (and all their hypotheses), dropping finished ones."""
        g = self.group
        hyp = (item_index[:, None] * g + torch.arange(g, device=item_index.device)).reshape(-1)  # [items' · g]
        self.reorder(hyp)
        self.cross_keys = [k.index_select(0, item_index) for k in self.cross_keys]
        self.cross_values = [v.index_select(0, item_index) for v in self.cross_values]


class CaptionDecoderLayer(nn.Module):
    """Post-norm decoder layer with the official extra outer residual (``out = LN3(...) + x``)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, official_unused_params: bool) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout)
        self.cross_attn = MultiheadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)  # stateless, so one module serves all four official dropout sites
        if official_unused_params:
            # fc_alpha1..3: created (Xavier, zero bias) but never read by the official forward pass
            self.fc_alpha1 = nn.Linear(2 * dim, dim)
            self.fc_alpha2 = nn.Linear(2 * dim, dim)
            self.fc_alpha3 = nn.Linear(2 * dim, dim)
            for lin in (self.fc_alpha1, self.fc_alpha2, self.fc_alpha3):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)

    def _after_self_attention(self, x: torch.Tensor, sa: torch.Tensor, cross_fn: Any) -> torch.Tensor:
        h1 = self.norm1(x + self.dropout(sa))
        h2 = self.norm2(h1 + self.dropout(cross_fn(h1)))
        ff = self.linear2(self.dropout(F.relu(self.linear1(h2))))
        h3 = self.norm3(h2 + self.dropout(ff))
        return h3 + x  # the official layer adds its input once more after the last norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``x`` [B, T, D], ``memory`` [B, L, D], ``self_mask`` bool [B, 1, T, T] → [B, T, D]."""
        sa = self.self_attn(x, x, self_mask)
        return self._after_self_attention(x, sa, lambda h: self.cross_attn(h, memory))

    def cross_attention_weights(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor) -> torch.Tensor:
        """The attention weights of this layer's cross-attention, as :meth:`forward` computes them: ``x`` [B, T, D],
        ``memory`` [B, L, D] → [B, H, T, L] (each row sums to 1 over the L memory positions), in float32."""
        sa = self.self_attn(x, x, self_mask)
        h1 = self.norm1(x + self.dropout(sa))
        q = self.cross_attn.project_q(h1).float()  # [B, H, T, Dh]
        k, _ = self.cross_attn.project_kv(memory)  # [B, H, L, Dh]
        scores = q @ k.float().transpose(-2, -1) / math.sqrt(self.cross_attn.head_dim)  # [B, H, T, L]
        return scores.softmax(dim=-1)

    def step(self, x: torch.Tensor, cache: DecoderCache, index: int) -> torch.Tensor:
        """One new token per hypothesis: ``x`` [N, 1, D] → [N, 1, D]; appends this layer's keys/values to ``cache``.

        Written without Python numbers taken from shapes, so that a traced graph (ONNX) keeps the batch and the
        cache length dynamic."""
        q, k, v = self.self_attn.project_qkv(x)  # 3 × [N, H, 1, Dh]
        # the first step's empty cache takes the new keys' dtype, so an autocast dtype is kept (a no-op otherwise)
        keys = torch.cat([cache.self_keys[index].to(k.dtype), k], dim=2)  # [N, H, t+1, Dh]
        values = torch.cat([cache.self_values[index].to(v.dtype), v], dim=2)  # [N, H, t+1, Dh]
        cache.self_keys[index], cache.self_values[index] = keys, values
        mask = cache.key_valid[:, None, None, :]  # [N, 1, 1, t+1]; no causal part: every cached key is in the past
        sa = self.self_attn.attend(q, keys, values, mask)

        def cross(h: torch.Tensor) -> torch.Tensor:
            g = cache.group
            qc = self.cross_attn.project_q(h).squeeze(2)  # [N, H, Dh]
            qc = qc.unflatten(0, (-1, g)).transpose(1, 2)  # [items, H, g, Dh]: an item's g queries attend together
            out = self.cross_attn.attend(qc, cache.cross_keys[index], cache.cross_values[index])  # [items, g, D]
            return out.flatten(0, 1).unsqueeze(1)  # [N, 1, D]

        return self._after_self_attention(x, sa, cross)


class TransformerCaptionDecoder(nn.Module):
    """Caption decoder: memory [B, L, D] + tokens [B, T] → next-token logits [B, T, V]."""

    def __init__(self, config: CaptionDecoderConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d = config.dim
        self.word_embedding = nn.Embedding(config.vocab_size, d)
        self.position_encoding = SinusoidalPositionEncoding(
            d, config.max_length, config.dropout, config.official_unused_params
        )
        self.layers = nn.ModuleList(
            CaptionDecoderLayer(d, config.heads, config.ffn_mult * d, config.dropout, config.official_unused_params)
            for _ in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output_proj = Fp32Linear(d, config.vocab_size)  # logits in fp32 under bf16 too (models/precision.py)
        nn.init.uniform_(self.word_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.output_proj.weight, -0.1, 0.1)
        nn.init.zeros_(self.output_proj.bias)

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def _check_memory(self, memory: torch.Tensor) -> None:
        if memory.dim() != 3 or memory.shape[-1] != self.config.dim:
            raise ModelError(f"decoder memory must be [B, L, {self.config.dim}], got {list(memory.shape)}")

    # ------------------------------------------------------------------ teacher forcing
    def forward(
        self, memory: torch.Tensor, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for ``tokens`` [B, T] (``<START> w… <END> <NULL>…``).

        ``key_padding_mask`` [B, T] (True = ignore this key) defaults to the official *training* mask: keys that are
        ``<NULL>`` **or** ``<END>``. This agrees with generation, whose mask is ``<NULL>`` only: a scored prediction
        at position t reads keys 0..t, and ``<END>`` can only be among them at positions after the caption ended
        (which are not scored); generation stops when ``<END>`` is produced, so ``<END>`` is never fed as a key.
        """
        self._check_memory(memory)
        b, t = tokens.shape
        if t > self.config.max_length:
            raise ModelError(f"caption has {t} tokens but the decoder was built with max_length={self.max_length}")
        if key_padding_mask is None:
            key_padding_mask = (tokens == NULL_ID) | (tokens == END_ID)  # [B, T]
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()  # [T, T] True = may attend
        allowed = causal & ~key_padding_mask[:, None, None, :]  # [B, 1, T, T]
        # A query with no visible key (only when position 0 is padding, e.g. an all-<NULL> row) would give NaN;
        # such rows attend to their causal prefix instead. Rows with a real <START> are untouched.
        allowed = allowed | (~allowed.any(dim=-1, keepdim=True) & causal)  # [B, 1, T, T]
        x = self.position_encoding(self.word_embedding(tokens))  # [B, T, D]
        for layer in self.layers:
            x = layer(x, memory, allowed)
        return self.output_proj(self.dropout(x))  # [B, T, V]

    def cross_attention(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Where the decoder looked while reading ``tokens`` [B, T]: the **last** layer's cross-attention weights over
        the L memory positions, **averaged over its heads** → float32 [B, T, L] (rows sum to 1).

        Row t is the attention of the query at position t, whose output predicts the token at t + 1; so for a
        generated caption ``<START> w_1 … w_n`` the row of position i − 1 belongs to word w_i. The last layer is the
        one whose output feeds the word prediction (with the papers' one-layer decoders, the only one); its heads
        are averaged because no single head is meant to localise. Keys are masked as in generation (``<NULL>``
        only), so the rows equal the weights of incremental decoding at the same positions.
        """
        self._check_memory(memory)
        b, t = tokens.shape
        if t > self.config.max_length:
            raise ModelError(f"caption has {t} tokens but the decoder was built with max_length={self.max_length}")
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()  # [T, T] True = may attend
        allowed = causal & (tokens != NULL_ID)[:, None, None, :]  # [B, 1, T, T]
        allowed = allowed | (~allowed.any(dim=-1, keepdim=True) & causal)  # [B, 1, T, T]; as in forward
        x = self.position_encoding(self.word_embedding(tokens))  # [B, T, D]
        for layer in self.layers[:-1]:
            x = layer(x, memory, allowed)
        return self.layers[-1].cross_attention_weights(x, memory, allowed).mean(dim=1)  # [B, T, L]

    # ------------------------------------------------------------------ incremental decoding
    def cross_keys_values(self, memory: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Every layer's cross-attention keys and values of ``memory`` [B, L, D] (two lists of [B, H, L, Dh]),
        computed once per generation."""
        self._check_memory(memory)
        keys, values = [], []
        for layer in self.layers:
            k, v = layer.cross_attn.project_kv(memory)  # 2 × [B, H, L, Dh]
            keys.append(k)
            values.append(v)
        return keys, values

    def init_cache(self, memory: torch.Tensor, group: int = 1) -> DecoderCache:
        """Start a generation over ``memory`` [B, L, D] with ``group`` hypotheses per item (no token fed yet)."""
        b = memory.shape[0]
        h, dh = self.config.heads, self.config.dim // self.config.heads
        cross_k, cross_v = self.cross_keys_values(memory)
        empty = memory.new_zeros(b * group, h, 0, dh)  # [N, H, 0, Dh]; replaced (not concatenated) at the first step
        return DecoderCache(
            group=group,
            self_keys=[empty] * len(self.layers),
            self_values=[empty] * len(self.layers),
            cross_keys=cross_k,
            cross_values=cross_v,
            key_valid=torch.zeros(b * group, 0, dtype=torch.bool, device=memory.device),
        )

    def step(self, tokens: torch.Tensor, cache: DecoderCache, position: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one token per hypothesis (``tokens`` [N]) at position ``cache.length`` → logits [N, V]; the cache
        grows by one position.

        The one KV-cache step of this decoder: generation (``decoding``) and the exported ONNX step graph
        (``models.onnx_graphs``) both run it. A traced graph passes ``position`` ([1] long), its cache length not
        being a Python number there."""
        pos = cache.length if position is None else position
        x = self.position_encoding(self.word_embedding(tokens)[:, None, :], offset=pos)  # [N, 1, D]
        cache.key_valid = torch.cat([cache.key_valid, (tokens != NULL_ID)[:, None]], dim=1)  # [N, t+1]
        for i, layer in enumerate(self.layers):
            x = layer.step(x, cache, i)
        return self.output_proj(self.dropout(x[:, 0]))  # [N, V]
