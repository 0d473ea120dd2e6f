"""Plain fusion baseline: concatenate both dates, project, learned positions, a small Transformer encoder.

Every claim about BDAM and HASD is measured against this fusion with the same CLIP encoder and caption decoder.
Decision: the baseline is *not* a separate model class; it is ``HiSem(encoder, ConcatFusion(...), decoder)`` (built
by ``build_model`` for ``architecture="plain"``), so training, decoding, saving and evaluation run the exact same code
for both and the comparison isolates the fusion.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from changecap.errors import ModelError
from changecap.models.parts.attention import EncoderLayer
from changecap.schema import from_dict, require


@dataclass
class ConcatFusionConfig:
    """Hyperparameters of :class:`ConcatFusion` (defaults sized like the paper model's width)."""

    dim: int = 768  # token width D of the backbone tokens and of the memory
    grid_size: int = 14  # tokens per side, L = grid_size² (sizes the learned position table)
    layers: int = 2  # Transformer encoder layers over the fused tokens (0: projection + positions only)
    heads: int = 8
    ffn_mult: int = 4  # FFN hidden = ffn_mult · dim
    dropout: float = 0.1

    @property
    def num_tokens(self) -> int:
        return self.grid_size * self.grid_size

    def validate(self, prefix: str = "fusion") -> None:
        for name in ("dim", "grid_size", "heads", "ffn_mult"):
            value = getattr(self, name)
            require(value > 0, f"{prefix}.{name}", f"must be a positive integer, got {value}")
        require(self.layers >= 0, f"{prefix}.layers", f"must be >= 0, got {self.layers}")
        require(self.dim % self.heads == 0, f"{prefix}.heads", f"must divide dim={self.dim}, got {self.heads}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "fusion") -> ConcatFusionConfig:
        return from_dict(cls, d, prefix)


class ConcatFusion(nn.Module):
    """(f_before, f_after) [B, L, D] → memory [B, L, D]: Linear(2D→D) of the channel concat + positions + encoder.

    No router: returns ``(memory, None)`` and keeps ``aux_loss`` at zero, so the trainer's router and balance terms
    vanish for this fusion.
    """

    def __init__(self, config: ConcatFusionConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else ConcatFusionConfig()
        config.validate()
        self.config = config
        d = config.dim
        self.input_proj = nn.Linear(2 * d, d)
        self.position = nn.Parameter(torch.zeros(config.num_tokens, d))  # [L, D] learned, one per grid cell
        nn.init.trunc_normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d, config.heads, config.ffn_mult * d, config.dropout, activation="relu", batch_first=True
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.aux_loss: torch.Tensor = torch.zeros(())

    def forward(
        self, f_before: torch.Tensor, f_after: torch.Tensor, route: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """``route`` is accepted for interface compatibility and ignored (this fusion has a single path)."""
        c = self.config
        if f_before.shape != f_after.shape or f_before.dim() != 3 or f_before.shape[1:] != (c.num_tokens, c.dim):
            raise ModelError(
                f"ConcatFusion expects two [B, {c.num_tokens}, {c.dim}] token tensors, got {list(f_before.shape)} "
                f"and {list(f_after.shape)}"
            )
        x = self.input_proj(torch.cat([f_before, f_after], dim=-1)) + self.position  # [B, L, D]
        for layer in self.layers:
            x = layer(x)  # [B, L, D]
        self.aux_loss = torch.zeros((), dtype=torch.float32, device=x.device)
        return self.norm(x), None

    def use_traceable_layers(self) -> None:
        """Swap each ``nn.TransformerEncoderLayer`` for changecap's :class:`EncoderLayer` with the same weights (the
        same function): traced for ONNX export, the torch layer's attention fixes the batch to the example's, which
        changecap's keeps dynamic. Export only: training keeps the torch layers (and their dropout draws)."""
        c = self.config
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.TransformerEncoderLayer):
                twin = EncoderLayer(c.dim, c.heads, c.ffn_mult * c.dim, c.dropout, activation="relu")
                twin.load_state_dict(layer.state_dict())
                self.layers[i] = twin.to(layer.linear1.weight.device).train(layer.training)
