"""A tiny captioner and an in-memory dataset honouring the model and sample contracts (docs/architecture.md).

They let the engine be tested in seconds without CLIP: the model has an encoder, a fusion with an image-level
router and two hard-routed paths (one with BatchNorm, one returning an aux loss — so a micro-batch can leave a path
unused, as HiSem's HASD does), dropout (so exact resume must restore the RNG) and a GRU decoder with greedy
generation. The dataset draws its random reference from ``(seed, epoch, index)`` like the real one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from changecap.data.vocab import END_ID, START_ID, Vocabulary
from changecap.models.contract import Capabilities, ChangeModel, Decoding, RawPrediction

WORDS = ("a", "house", "is", "built", "on", "the", "left", "right", "scene", "same", "as", "before")
CHANGED_LEFT = "a house is built on the left"
CHANGED_RIGHT = "a house is built on the right"
UNCHANGED = "the scene is the same as before"

# A real HiSem small enough for CPU tests: random CLIP (32 px, patch 8 → 4×4 tokens), 1 BDAM layer, 4 experts.
TINY_MODEL = {
    "architecture": "hisem",
    "encoder": {
        "config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        "trainable_layers": -1,
    },
    "fusion": {
        "dim": 32,
        "grid_size": 4,
        "bdam_layers": 1,
        "heads": 2,
        "num_experts": 4,
        "top_k": 2,
        "n_group": 2,
        "topk_group": 1,
        "n_shared_experts": 1,
        "expert_hidden": 64,
        "pwff_hidden": 64,
    },
    "decoder": {"dim": 32, "layers": 1, "heads": 2},
}


def toy_vocab() -> Vocabulary:
    return Vocabulary.build([w.split() for w in (CHANGED_LEFT, CHANGED_RIGHT, UNCHANGED)], threshold=0)


@dataclass
class ToyOutput:
    logits: torch.Tensor
    router_logits: torch.Tensor | None
    aux_loss: torch.Tensor


class ToyCaptioner(ChangeModel):
    """encoder → fusion (router + two hard-routed paths) → GRU decoder. It is registered nowhere, so it declares its
    capabilities itself (a model may: ``ChangeModel.capabilities``)."""

    def __init__(
        self, vocab_size: int, max_length: int, dim: int = 16, router: bool = True, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.max_length = max_length
        self.encoder = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.fusion = nn.ModuleDict(
            {
                "unchanged": nn.Linear(2 * dim, dim),
                "changed": nn.Linear(2 * dim, dim, bias=False),  # a bias before BatchNorm has no effect
                "changed_norm": nn.BatchNorm1d(dim),
                "gate": nn.Linear(dim, 4, bias=False),
            }
        )
        self.router = nn.Linear(dim, 2, bias=False) if router else None
        self.decoder = nn.ModuleDict(
            {
                "embed": nn.Embedding(vocab_size, dim),
                "gru": nn.GRU(dim, dim, batch_first=True),
                "drop": nn.Dropout(dropout),
                "out": nn.Linear(dim, vocab_size),
            }
        )

    @property
    def architecture(self) -> str:
        return "toy"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(captions=True, change_probability=self.router is not None)

    @property
    def image_size(self) -> int:
        return 8

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        seqs, prob = self.caption(images, decoding.max_length or self.max_length)
        return RawPrediction(captions=seqs, change_probability=prob)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups by part (the router falls into the trainer's ``other`` group)."""
        return {name: list(getattr(self, name).parameters()) for name in ("encoder", "fusion", "decoder")}

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.encoder(image[:, 0]).flatten(2).transpose(1, 2)  # [B, L, D]
        f2 = self.encoder(image[:, 1]).flatten(2).transpose(1, 2)  # [B, L, D]
        return f1, f2

    def fuse(
        self, f1: torch.Tensor, f2: torch.Tensor, route: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        delta = (f2 - f1).mean(dim=1)  # [B, D]
        z = self.router(delta) if self.router is not None else None  # [B, 2]
        if route is None:
            route = z.argmax(-1) if z is not None else torch.ones(len(f1), dtype=torch.long, device=f1.device)
        x = torch.cat([f1, f2], dim=-1)  # [B, L, 2D]
        memory = torch.zeros_like(f1)
        aux = torch.zeros((), device=f1.device)
        sel = route == 1
        if sel.any():
            h = self.fusion["changed"](x[sel])  # [N, L, D]
            n, length, d = h.shape
            h = self.fusion["changed_norm"](h.reshape(n * length, d)).reshape(n, length, d)  # [N, L, D]
            memory[sel] = h
            if self.training:
                aux = 0.001 * torch.sigmoid(self.fusion["gate"](h)).mean()
        if (~sel).any():
            memory[~sel] = self.fusion["unchanged"](x[~sel])
        return memory, z, aux

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h0 = memory.mean(dim=1).unsqueeze(0).contiguous()  # [1, B, D]
        out, _ = self.decoder["gru"](self.decoder["embed"](tokens), h0)  # [B, T, D]
        return self.decoder["out"](self.decoder["drop"](out))  # [B, T, V]

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, route: torch.Tensor | None = None) -> ToyOutput:
        f1, f2 = self.encode(image)
        memory, z, aux = self.fuse(f1, f2, route)
        return ToyOutput(self.decode(memory, tokens), z, aux)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, max_length: int = 41, beam_size: int = 1) -> list[list[int]]:
        b = memory.shape[0]
        seqs = torch.full((b, 1), START_ID, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(max_length - 1):
            nxt = self.decode(memory, seqs)[:, -1].argmax(-1)  # [B]
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            done |= nxt == END_ID
            if done.all():
                break
        out = []
        for row in seqs.tolist():
            out.append(row[: row.index(END_ID) + 1] if END_ID in row else row)
        return out

    @torch.no_grad()
    def caption(
        self, image: torch.Tensor, max_length: int = 41, beam_size: int = 1
    ) -> tuple[list[list[int]], torch.Tensor | None]:
        f1, f2 = self.encode(image)
        memory, z, _ = self.fuse(f1, f2, None)
        prob = None if z is None else z.float().softmax(-1)[:, 1]
        return self.generate(memory, max_length, beam_size), prob


class ToyDataset(Dataset):
    """``n`` pairs of 8×8 images: even items changed (a bright square on the left or right), odd unchanged."""

    def __init__(self, n: int, vocab: Vocabulary, split: str = "train", seed: int = 0, max_length: int = 10) -> None:
        self.n, self.vocab, self.split, self.seed, self.max_length = n, vocab, split, seed, max_length
        self.epoch = 0
        rng = np.random.default_rng(1234 + len(split))
        self.before = torch.from_numpy(rng.normal(size=(n, 3, 8, 8)).astype(np.float32))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        before = self.before[i]
        after = before.clone()
        changed = i % 2 == 0
        if changed:
            left = i % 4 == 0
            after[:, 2:6, (0 if left else 4) : (4 if left else 8)] += 3.0
            captions = [CHANGED_LEFT if left else CHANGED_RIGHT, "a house is built"]
        else:
            captions = [UNCHANGED, UNCHANGED]
        tokens = self.vocab.encode_tensor(captions, self.max_length)  # [R, T]
        k = int(np.random.default_rng((self.seed, self.epoch, i)).integers(len(captions)))
        return {
            "image": torch.stack([before, after]),  # [2, 3, 8, 8]
            "captions": captions,
            "tokens": tokens,
            "target": tokens[k].clone(),
            "changed": changed,
            "name": f"{self.split}_{i:04d}.png",
            "split": self.split,
        }


def toy_builder(router: bool = True, dropout: float = 0.1):
    """A ``model_builder`` for the Trainer: honours ``model.dim`` from the config section."""

    def build(section: dict[str, Any], vocab: Vocabulary, max_length: int) -> tuple[nn.Module, Any]:
        model = ToyCaptioner(len(vocab), max_length, dim=int(section.get("dim", 16)), router=router, dropout=dropout)
        return model, dict(section)

    return build


def toy_saver(model: nn.Module, model_config: Any, vocab: Vocabulary, out_dir: Path, card: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    vocab.save(out_dir / "vocab.json")
    (out_dir / "card.json").write_text(json.dumps(card, default=str))


def load_toy_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))
