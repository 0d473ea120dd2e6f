"""``changecap pretrain clip``: a ``transformers`` CLIPModel trained contrastively on single-date images and captions.

Both towers start from random initialisation at a configured size. Each update embeds the batch's images and one
caption per image (drawn per epoch), L2-normalises both, and minimises CLIP's symmetric InfoNCE: cross-entropy of
the image→text and text→image similarity matrices scaled by a learned temperature ``exp(logit_scale)``, initialised
at 1/0.07 and capped at 100 as CLIP. Under DDP the embeddings of every process are gathered first, so the matrix
covers the global batch.

The written directory is a CLIP checkpoint as ``openai/clip-vit-base-patch16`` is one: ``config.json`` and
``model.safetensors`` of the CLIPModel, the tokenizer (``models/foundations/tokenizer.py``) and
``preprocessor_config.json``. Its vision tower loads through ``model.encoder.pretrained: DIR`` of HiSem or DFM
(``CLIPVisionModel.from_pretrained`` reads the vision half of a full CLIP checkpoint); the images must then be
prepared as in pretraining (``pretrain_card.json`` records the size, resize rule and statistics).

Held-out evaluation: zero-shot retrieval between the held-out images and the distinct captions they have; an
image→text hit at k when one of the image's own captions is among the k most similar texts, a text→image hit when
one of the images the text describes is among the k most similar images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ConfigError
from changecap.models.foundations.target import PretrainInputs, PretrainTarget
from changecap.models.foundations.tokenizer import TokenizerConfig, train_tokenizer
from changecap.models.parallel import all_gather_with_grad
from changecap.models.parts.clip_encoder import clip_vision_config
from changecap.schema import require

#: CLIPTextConfig fields a config may set; the vocabulary, positions and special ids come from the tokenizer
TEXT_FIELDS: tuple[str, ...] = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act", "layer_norm_eps",
    "attention_dropout", "initializer_range", "initializer_factor",
)  # fmt: skip
RECALL_AT: tuple[int, ...] = (1, 5)


def _vision_defaults() -> dict[str, Any]:
    return {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 8, "num_attention_heads": 4,
            "patch_size": 8, "hidden_act": "quick_gelu"}  # fmt: skip


def _text_defaults() -> dict[str, Any]:
    return {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4}


@dataclass
class CLIPPretrainConfig:
    """The ``model`` section of ``changecap pretrain clip``.

    ``vision``: ``CLIPVisionConfig`` fields (``image_size`` defaults to ``data.image_size`` and must equal it);
    ``text``: ``CLIPTextConfig`` fields of :data:`TEXT_FIELDS`; ``projection_dim``: the shared embedding width.
    """

    vision: dict[str, Any] = field(default_factory=_vision_defaults)
    text: dict[str, Any] = field(default_factory=_text_defaults)
    projection_dim: int = 128
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
    logit_scale_max: float = math.log(100.0)  # CLIP caps the logit scale at 100
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def validate(self, prefix: str = "model") -> None:
        require(self.projection_dim >= 1, f"{prefix}.projection_dim", f"must be >= 1, got {self.projection_dim}")
        require(
            self.logit_scale_init <= self.logit_scale_max,
            f"{prefix}.logit_scale_init",
            f"{self.logit_scale_init} is above logit_scale_max {self.logit_scale_max}",
        )
        for key in self.text:
            require(key in TEXT_FIELDS, f"{prefix}.text.{key}", f"not settable here; expected one of "
                    f"{', '.join(TEXT_FIELDS)} (vocabulary and positions come from the tokenizer)")  # fmt: skip
        hidden, heads = self.text.get("hidden_size", 512), self.text.get("num_attention_heads", 8)
        require(
            isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads == 0,
            f"{prefix}.text.num_attention_heads",
            f"hidden_size {hidden} must be a multiple of the head count {heads}",
        )
        self.tokenizer.validate(f"{prefix}.tokenizer")


class CLIPPretrainer(nn.Module):
    """The pretraining module (contract in ``target.py``) around a ``transformers.CLIPModel`` and its tokenizer."""

    def __init__(self, clip: nn.Module, tokenizer: Any, config: CLIPPretrainConfig, inputs: PretrainInputs) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.config = config
        self.inputs = inputs

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {
            "vision": [*self.clip.vision_model.parameters(), *self.clip.visual_projection.parameters()],
            "text": [*self.clip.text_model.parameters(), *self.clip.text_projection.parameters()],
            "logit_scale": [self.clip.logit_scale],
        }

    def tokenize(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``<s> caption </s>`` ids [B, T] and attention mask [B, T], truncated to the tokenizer's max length (the
        truncation keeps ``</s>``, where the text tower pools)."""
        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.tokenizer.max_length, return_tensors="pt"
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] → L2-normalised image embeddings [B, P] (fp32)."""
        out = self.clip.get_image_features(pixel_values=images).pooler_output  # [B, P]
        return F.normalize(out.float(), dim=-1)

    def embed_texts(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """Captions → L2-normalised text embeddings [B, P] (fp32)."""
        ids, mask = self.tokenize(texts, device)
        out = self.clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output  # [B, P]
        return F.normalize(out.float(), dim=-1)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        image_emb = all_gather_with_grad(self.embed_images(images))  # [N, P], N = global batch
        text_emb = all_gather_with_grad(self.embed_texts(list(batch["caption"]), images.device))  # [N, P]
        scale = self.clip.logit_scale.clamp(max=self.config.logit_scale_max).exp()
        logits = scale * image_emb @ text_emb.t()  # [N, N]: image i against text j
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        return {"contrastive": loss}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Zero-shot retrieval recall@k (module docstring) and the temperature."""
        images, owners = [], []  # image embeddings; per image, its captions
        for batch in batches:
            images.append(self.embed_images(batch["image"]))
            owners.extend(list(c) for c in batch["captions"])
        if not images:
            return {}
        device = images[0].device
        image_emb = torch.cat(images)  # [I, P]
        texts = list(dict.fromkeys(c for caps in owners for c in caps))  # distinct captions, first-seen order
        index = {t: j for j, t in enumerate(texts)}
        text_emb = torch.cat([self.embed_texts(texts[i : i + 256], device) for i in range(0, len(texts), 256)])
        relevant = torch.zeros(len(owners), len(texts), dtype=torch.bool, device=device)  # [I, T]
        for i, caps in enumerate(owners):
            relevant[i, [index[c] for c in caps]] = True
        sim = image_emb @ text_emb.t()  # [I, T]
        out: dict[str, float] = {"images": float(len(owners)), "texts": float(len(texts))}
        for k in RECALL_AT:
            top_t = sim.topk(min(k, len(texts)), dim=1).indices  # [I, k]
            out[f"image_to_text_R@{k}"] = relevant.gather(1, top_t).any(dim=1).float().mean().item()
            top_i = sim.t().topk(min(k, len(owners)), dim=1).indices  # [T, k]
            out[f"text_to_image_R@{k}"] = relevant.t().gather(1, top_i).any(dim=1).float().mean().item()
        out["temperature"] = 1.0 / self.clip.logit_scale.clamp(max=self.config.logit_scale_max).exp().item()
        return out

    def save_pretrained(self, out_dir: Path) -> None:
        self.clip.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        text = json.dumps(image_processor_config(self.inputs), indent=2) + "\n"
        (Path(out_dir) / "preprocessor_config.json").write_text(text, encoding="utf-8")


def image_processor_config(inputs: PretrainInputs) -> dict[str, Any]:
    """``preprocessor_config.json`` of a ``CLIPImageProcessor`` that prepares images as pretraining did (bicubic,
    0–1 scale, the run's statistics; ``resize``: to the square, ``clip``: shorter side then a centred crop), for
    tools that read it."""
    s = inputs.image_size
    crop = inputs.resize_mode == "clip"
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": s} if crop else {"height": s, "width": s},
        "resample": 3,  # PIL bicubic
        "do_center_crop": crop,
        "crop_size": {"height": s, "width": s},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(inputs.mean),
        "image_std": list(inputs.std),
    }


def build_clip(config: CLIPPretrainConfig, inputs: PretrainInputs) -> CLIPPretrainer:
    """A randomly initialised CLIPModel of the configured size with a tokenizer trained on ``inputs.texts``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig

    vision_fields = dict(config.vision)
    size = vision_fields.setdefault("image_size", inputs.image_size)
    if size != inputs.image_size:
        raise ConfigError("model.vision.image_size", f"is {size} but data.image_size is {inputs.image_size}")
    vision = clip_vision_config(vision_fields, "model.vision")
    if not inputs.texts:
        raise ConfigError("data.root", "the clip target needs captions, and the training images have none")
    tokenizer = train_tokenizer(inputs.texts, config.tokenizer)
    try:
        text = CLIPTextConfig(
            **config.text,
            vocab_size=len(tokenizer),
            max_position_embeddings=config.tokenizer.max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    except (TypeError, ValueError) as e:
        raise ConfigError("model.text", f"rejected by CLIPTextConfig: {' '.join(str(e).split())}") from None
    clip_config = CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        projection_dim=config.projection_dim,
        logit_scale_init_value=config.logit_scale_init,
    )
    clip_config._attn_implementation = "sdpa"
    return CLIPPretrainer(CLIPModel(clip_config), tokenizer, config, inputs)


TARGET = PretrainTarget(
    name="clip",
    summary="CLIP (vision + text towers) trained contrastively on single-date images and their captions",
    config_class=CLIPPretrainConfig,
    build=build_clip,
    inputs="images",
    needs=("captions",),
    loads_as="model.encoder.pretrained: DIR (HiSem, DFM)",
)
