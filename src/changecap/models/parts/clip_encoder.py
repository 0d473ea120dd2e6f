"""CLIP vision tower as a patch-token encoder (spec ``hisem.md`` §2).

Wraps ``transformers.CLIPVisionModel`` (the module is held as ``self.vision``, so this encoder's state dict is the
``CLIPVisionModel`` state dict under ``vision.``). The output is the last layer's patch tokens, CLS dropped,
``post_layernorm`` applied (``patch_ln_post=True``, the spec's choice since the authors' patch is not recoverable),
no projection: [B, G·G, hidden] in CLIP's row-major order (token ``t = row · G + col``).

Images must already be CLIP-preprocessed (shorter-side bicubic resize, centre crop, CLIP mean/std:
``changecap.data.image_io.resize_shorter_then_center_crop`` and ``NORMALIZATION["clip"]``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn

from changecap.errors import ConfigError, ModelError, first_line
from changecap.schema import from_dict, require, to_dict

#: CLIPVisionConfig fields of OpenAI CLIP ViT-B/16's visual tower. ``CLIPVisionModel`` holds 85,799,424 parameters:
#: the spec's 86,192,640 also counts OpenAI's 768→512 ``proj`` (393,216), which patch tokens never use.
VIT_B16_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}

#: the CLIPVisionConfig fields that define the architecture; everything else in a transformers config is bookkeeping
ARCHITECTURE_FIELDS: tuple[str, ...] = (*VIT_B16_CONFIG, "attention_dropout")


def check_vision_fields(fields: Mapping[str, Any], field: str = "model.encoder.config") -> None:
    """The architecture fields' values (sizes positive and divisible, ``layer_norm_eps`` and ``attention_dropout``
    finite and in range), without importing transformers: run when a config is read, before anything is built."""
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size"):
        val = fields.get(key, 1)
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ConfigError(f"{field}.{key}", f"must be a positive integer, got {val!r}")
    hidden, heads = fields.get("hidden_size", 768), fields.get("num_attention_heads", 12)
    if hidden % heads:
        raise ConfigError(f"{field}.num_attention_heads", f"hidden_size {hidden} is not divisible by {heads} heads")
    image, patch = fields.get("image_size", 224), fields.get("patch_size", 32)
    if image % patch:
        raise ConfigError(f"{field}.patch_size", f"image_size {image} is not a multiple of patch_size {patch}")
    ranges = {"layer_norm_eps": (0.0, False, 1.0), "attention_dropout": (0.0, True, 1.0)}  # (low, inclusive, high)
    for key, (low, inclusive, high) in ranges.items():
        val = fields.get(key)
        if val is None:
            continue
        number = isinstance(val, (int, float)) and not isinstance(val, bool) and math.isfinite(val)
        if not number or not (low <= val if inclusive else low < val) or not val < high:
            shown = f"[{low:g}, {high:g})" if inclusive else f"({low:g}, {high:g})"
            raise ConfigError(f"{field}.{key}", f"must be a number in {shown}, got {val!r}")


def clip_vision_config(fields: Mapping[str, Any], field: str = "model.encoder.config") -> Any:
    from transformers import CLIPVisionConfig
    from transformers.activations import ACT2FN

    known = set(CLIPVisionConfig().to_dict())
    for key in fields:
        if key not in known:
            raise ConfigError(f"{field}.{key}", "not a CLIPVisionConfig field")
    check_vision_fields(fields, field)
    act = fields.get("hidden_act", "quick_gelu")
    if not isinstance(act, str) or act not in ACT2FN:
        raise ConfigError(f"{field}.hidden_act", f"not an activation transformers knows, got {act!r}")
    try:
        cfg = CLIPVisionConfig(**dict(fields))
    except (ValueError, TypeError) as e:  # transformers' own validation (e.g. a bad hidden_act)
        reason = " ".join(str(e).split())
        raise ConfigError(field, f"rejected by CLIPVisionConfig: {reason}") from None
    return cfg


class FrozenPrefixCache:
    """Outputs of an encoder's frozen leading blocks, one entry per image, addressed by the image's content.

    Frozen blocks compute the same function of the same image in every epoch (CLIP has no dropout at its default
    ``attention_dropout=0``), so a training run that sees each image once per epoch can compute them once and
    replay only the trained blocks afterwards. The key is a BLAKE2 hash of the image's bytes, shape and dtype plus the
    autocast dtype, so an augmented or otherwise different image is a miss, never a wrong hit. Entries are evicted
    least-recently-used beyond ``max_bytes`` (a per-process budget: each DDP rank holds its own cache). Entries live
    in host memory, which is larger and cheaper than a GPU's: a hit costs one small host-to-device copy.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"the cache budget must be positive, got {max_bytes} bytes")
        self.max_bytes = int(max_bytes)
        self.entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image: torch.Tensor, compute_dtype: torch.dtype | None) -> bytes:
        """Content key of one image [3, S, S] under an autocast dtype (``None``: no autocast)."""
        raw = image.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        h = hashlib.blake2b(raw.data, digest_size=20)
        h.update(f"{tuple(image.shape)}|{image.dtype}|{compute_dtype}".encode())
        return h.digest()

    def get(self, key: bytes) -> torch.Tensor | None:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)  # most recently used last
        return entry

    def put(self, key: bytes, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes or key in self.entries:
            return
        # a copy: a row of a batch would otherwise keep the whole batch alive; a normal tensor even when filled during
        # validation (inference_mode), so that whatever reads it later in training may use it freely
        with torch.inference_mode(False):
            self.entries[key] = value.detach().to("cpu", copy=True)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)


def _run_block(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """One ``CLIPEncoderLayer`` without attention mask (older transformers return a 1-tuple)."""
    out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out


class CLIPPatchEncoder(nn.Module):
    """Image [B, 3, S, S] → patch tokens [B, (S/P)², hidden] from a CLIP vision tower.

    ``trainable_layers`` sets which parameters receive gradients (the paper fine-tunes the last 4 of 12 blocks plus
    ``post_layernorm``; 0 freezes everything, -1 trains everything). Frozen parameters get
    ``requires_grad=False``, so optimisers built from ``requires_grad`` parameters skip them.
    """

    def __init__(self, vision: nn.Module, trainable_layers: int = 4, patch_ln_post: bool = True) -> None:
        super().__init__()
        self.vision = vision  # transformers.CLIPVisionModel
        use_fused_quick_gelu(vision)
        self.patch_ln_post = patch_ln_post
        self.trainable_layers = trainable_layers
        self.prefix_cache: FrozenPrefixCache | None = None  # off unless enable_prefix_cache (training runs)
        self.set_trainable_layers(trainable_layers)
        # new weights make every cached output stale
        self.register_load_state_dict_post_hook(lambda module, _keys: module.clear_prefix_cache())

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        fields: Mapping[str, Any],
        trainable_layers: int = 4,
        patch_ln_post: bool = True,
        init_weights: bool = True,
    ) -> CLIPPatchEncoder:
        """Random initialisation from ``CLIPVisionConfig`` fields (tests, CPU runs, or before loading weights).

        ``init_weights=False`` allocates the parameters without initialising them (garbage values): transformers'
        initialisation of a ViT-B/16 takes seconds on CPU, which is pure waste when every weight is loaded next
        (``load_model``). Only the non-persistent ``position_ids`` buffer, which no checkpoint carries, is filled.
        """
        from transformers import CLIPVisionModel

        cfg = clip_vision_config(fields)
        cfg._attn_implementation = "sdpa"  # fixed so the same model computes the same way on every machine
        if init_weights:
            return cls(CLIPVisionModel(cfg), trainable_layers, patch_ln_post)
        with torch.device("meta"):
            vision = CLIPVisionModel(cfg)
        vision = vision.to_empty(device="cpu")
        emb = vision.embeddings
        emb.register_buffer("position_ids", torch.arange(emb.num_positions).expand((1, -1)), persistent=False)
        persistent = set(vision.state_dict())
        others = [n for n, _ in vision.named_buffers() if n not in persistent and n != "embeddings.position_ids"]
        if others:  # a transformers version with more unsaved state: initialise normally rather than guess it
            return cls(CLIPVisionModel(cfg), trainable_layers, patch_ln_post)
        return cls(vision, trainable_layers, patch_ln_post)

    @classmethod
    def from_pretrained(
        cls, name_or_dir: str | os.PathLike[str], trainable_layers: int = 4, patch_ln_post: bool = True
    ) -> CLIPPatchEncoder:
        """Real weights: a Hugging Face CLIP id (e.g. ``openai/clip-vit-base-patch16``) or a local directory.

        Works offline when the weights are in the local Hugging Face cache; the text tower of a full CLIP
        checkpoint is ignored. Weights are loaded in float32 (the paper runs CLIP in float32).
        """
        from transformers import CLIPVisionModel

        name = str(name_or_dir)
        if name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir():  # a path, not a hub id
            if not Path(name).expanduser().is_dir():
                raise ModelError(f"CLIP weights directory '{name}' does not exist")
            name = str(Path(name).expanduser())
        try:
            vision = CLIPVisionModel.from_pretrained(name, dtype=torch.float32, attn_implementation="sdpa")
        except (OSError, ValueError) as e:
            where = "local directory" if Path(name).is_dir() else "model id"
            first = first_line(e)
            raise ModelError(
                f"cannot load CLIP vision weights from {where} '{name}' (offline and not in the Hugging Face cache, "
                f"or not a CLIP checkpoint): {first}"
            ) from None
        return cls(vision, trainable_layers, patch_ln_post)

    # ------------------------------------------------------------------ properties
    @property
    def config_fields(self) -> dict[str, Any]:
        """The architecture fields of the vision config (what ``from_config`` needs to rebuild this encoder)."""
        full = self.vision.config.to_dict()
        return {k: full[k] for k in ARCHITECTURE_FIELDS if k in full}

    @property
    def hidden_size(self) -> int:
        return int(self.vision.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.vision.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.vision.config.patch_size)

    @property
    def grid_size(self) -> int:
        """Patch tokens per side (14 for ViT-B/16 at 224)."""
        return self.image_size // self.patch_size

    @property
    def num_layers(self) -> int:
        return int(self.vision.config.num_hidden_layers)

    # ------------------------------------------------------------------ fine-tuning
    def set_trainable_layers(self, k: int) -> None:
        """Freeze everything except the last ``k`` transformer blocks and ``post_layernorm`` (-1 = all, 0 = none).

        ``k`` larger than the number of blocks trains every block (embeddings stay frozen), so the paper default of 4
        also works for the 2-layer test encoders.
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < -1:
            raise ConfigError("model.encoder.trainable_layers", f"must be -1 (all), 0 (frozen) or >= 1, got {k!r}")
        self.trainable_layers = k
        self.clear_prefix_cache()
        train_all = k == -1
        for p in self.vision.parameters():
            p.requires_grad_(train_all)
        if k > 0:
            for layer in self.vision.encoder.layers[self.frozen_blocks :]:
                for p in layer.parameters():
                    p.requires_grad_(True)
            for p in self.vision.post_layernorm.parameters():
                p.requires_grad_(True)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each transformer block in backward instead of storing its activations (training only).

        transformers' non-reentrant checkpointing of ``CLIPEncoderLayer``: frozen blocks, whose input and weights
        need no gradient, are never replayed, so the extra cost is one forward of the trainable blocks.
        """
        vision = self.vision
        if hasattr(vision, "activation_checkpointing_enable"):  # transformers ≥ 5.x names it so
            if enabled:
                vision.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                vision.activation_checkpointing_disable()
        elif enabled:
            vision.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            vision.gradient_checkpointing_disable()

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(
            getattr(self.vision.encoder, "gradient_checkpointing", False)
            or any(getattr(layer, "gradient_checkpointing", False) for layer in self.vision.encoder.layers)
        )

    @property
    def frozen_blocks(self) -> int:
        """How many leading transformer blocks are frozen (they, the embeddings and ``pre_layrnorm`` get no grads)."""
        k, n = self.trainable_layers, self.num_layers
        return 0 if k == -1 else max(n - k, 0)

    def enable_prefix_cache(self, max_bytes: int) -> FrozenPrefixCache:
        """Cache the frozen blocks' output per image (see :class:`FrozenPrefixCache`), up to ``max_bytes``.

        Each entry is one image's [1 + G·G, hidden] tokens (605 KB for ViT-B/16 in fp32). Raises
        :class:`~changecap.errors.ModelError` when nothing is frozen or the frozen blocks are not deterministic.
        """
        if self.frozen_blocks == 0:
            raise ModelError(
                f"the CLIP encoder has no frozen blocks to cache (trainable_layers={self.trainable_layers} of "
                f"{self.num_layers})"
            )
        dropout = float(getattr(self.vision.config, "attention_dropout", 0.0) or 0.0)
        if dropout > 0:
            raise ModelError(
                f"the CLIP encoder's attention_dropout is {dropout}: its frozen blocks are random in training, "
                "so their outputs cannot be cached"
            )
        self.prefix_cache = FrozenPrefixCache(max_bytes)
        return self.prefix_cache

    def disable_prefix_cache(self) -> None:
        self.prefix_cache = None

    def clear_prefix_cache(self) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def _hidden_states(self, images: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state`` [B, 1 + G·G, hidden] of the vision tower (before ``post_layernorm``)."""
        cache, frozen = self.prefix_cache, self.frozen_blocks
        if cache is None or frozen == 0:
            return self.vision(pixel_values=images).last_hidden_state
        prefix_params = [p for layer in self.vision.encoder.layers[:frozen] for p in layer.parameters()]
        if any(p.requires_grad for p in prefix_params):  # unfrozen by hand: cached outputs would cut the gradient
            raise ModelError("a block cached by the frozen-feature cache requires gradients; disable the cache first")
        device = images.device.type
        compute_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        host = images.detach().to("cpu")  # one device-to-host copy for the whole batch's keys
        keys = [cache.key(image, compute_dtype) for image in host]
        rows: list[torch.Tensor | None] = [cache.get(key) for key in keys]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            with torch.no_grad():  # frozen: nothing upstream of these blocks is trained
                h = self.vision.pre_layrnorm(self.vision.embeddings(images[missing]))  # [M, 1 + G·G, hidden]
                for layer in self.vision.encoder.layers[:frozen]:
                    h = _run_block(layer, h)
            for j, i in enumerate(missing):
                rows[i] = h[j]
                cache.put(keys[i], h[j])
        # hits come from host memory, fresh rows are on the images' device
        hidden = torch.stack([row.to(images.device) for row in rows if row is not None])  # [B, 1 + G·G, hidden]
        for layer in self.vision.encoder.layers[frozen:]:
            hidden = _run_block(layer, hidden)
        return hidden

    # ------------------------------------------------------------------ forward
    @overload
    def forward(self, images: torch.Tensor, with_cls: Literal[False] = False) -> torch.Tensor: ...
    @overload
    def forward(self, images: torch.Tensor, with_cls: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...
    def forward(self, images: torch.Tensor, with_cls: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``images`` [B, 3, S, S] (CLIP-preprocessed) → patch tokens [B, G·G, hidden], row-major; with ``with_cls``
        → (patch tokens, [CLS] [B, hidden]).

        The [CLS] token is taken after ``post_layernorm`` and before CLIP's projection (what ``CLIPVisionModel``
        calls ``pooler_output``). One entry point for both, so that ``torch.compile`` of ``forward`` (the
        captioner's ``--compile``) covers every caller.
        """
        s = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ModelError(f"CLIP encoder expects images [B, 3, {s}, {s}], got {list(images.shape)}")
        hidden = self._hidden_states(images)  # [B, 1 + G·G, hidden], before post_layernorm
        tokens = hidden[:, 1:]  # [B, G·G, hidden], CLS dropped
        if self.patch_ln_post:
            tokens = self.vision.post_layernorm(tokens)
        if not with_cls:
            return tokens
        return tokens, self.vision.post_layernorm(hidden[:, 0])  # [B, G·G, hidden], [B, hidden]


# ---------------------------------------------------------------------------------------------------- activation
class QuickGELU(nn.Module):
    """CLIP's ``x · σ(1.702 x)``, bit-identical to transformers' ``QuickGELUActivation``.

    Where no gradient is needed (inference, frozen blocks) it runs as one buffer updated in place (scale, sigmoid,
    multiply) instead of three fresh [B, L, 4D] tensors: on the paper encoder's shape (1 thread, 16 images) 44
    instead of 97 ms per block as an operation; whole captioning gained 1.02× (paper HiSem) to 1.09× (CPU HiSem)
    (``bench_model_speed.py --gelu-reference``). Multiplication commutes bit for bit, so the outputs are the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return x * torch.sigmoid(1.702 * x)  # autograd keeps both factors
        y = torch.mul(x, 1.702)
        return y.sigmoid_().mul_(x)


def use_fused_quick_gelu(vision: nn.Module) -> int:
    """Replace transformers' quick-GELU modules of a CLIP vision model by :class:`QuickGELU` (no parameters, so
    weights and ``state_dict`` keys are unchanged); returns how many were replaced."""
    from transformers.activations import QuickGELUActivation

    replaced = 0
    for module in vision.modules():
        if isinstance(getattr(module, "activation_fn", None), QuickGELUActivation):
            module.activation_fn = QuickGELU()
            replaced += 1
    return replaced


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class EncoderConfig:
    """The CLIP patch encoder of a model config (``model.encoder``)."""

    pretrained: str | None = None  # HF CLIP id or local dir to load real weights from (provenance once saved)
    config: dict[str, Any] | None = None  # CLIPVisionConfig fields; random init when ``pretrained`` is None
    trainable_layers: int = 4  # last k transformer blocks (+ post_layernorm) are fine-tuned; 0 frozen, -1 all
    patch_ln_post: bool = True  # apply post_layernorm to the patch tokens (hisem.md §2)
    # Recompute the trainable blocks' activations during backward instead of keeping them from the forward pass:
    # less activation memory for large configs and batches, at the cost of one more forward of those blocks per
    # update; same losses and gradients. Training only (inference keeps nothing for backward anyway).
    gradient_checkpointing: bool = False

    def validate(self, prefix: str = "model.encoder") -> None:
        require(
            self.pretrained is not None or self.config is not None,
            f"{prefix}.config",
            "give either 'pretrained' (a CLIP id or directory) or 'config' (CLIPVisionConfig fields)",
        )
        k = self.trainable_layers
        require(k >= -1, f"{prefix}.trainable_layers", f"must be -1 (all), 0 (frozen) or a layer count, got {k}")
        if self.config is not None:
            for key in ("hidden_size", "image_size", "patch_size"):
                require(key in self.config, f"{prefix}.config.{key}", "required CLIPVisionConfig field is missing")
            check_vision_fields(self.config, f"{prefix}.config")

    @property
    def hidden_size(self) -> int | None:
        return None if self.config is None else int(self.config["hidden_size"])

    @property
    def grid_size(self) -> int | None:
        if self.config is None:
            return None
        return int(self.config["image_size"]) // int(self.config["patch_size"])

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "model.encoder") -> EncoderConfig:
        return from_dict(cls, d, prefix)


def build_clip_encoder(
    config: EncoderConfig, load_pretrained: bool = True, init_weights: bool = True, prefix: str = "model.encoder"
) -> tuple[CLIPPatchEncoder, EncoderConfig]:
    """The encoder ``config`` describes, and a copy of ``config`` whose ``config`` holds its complete architecture.

    With ``load_pretrained`` and ``pretrained`` set, the weights come from that id/directory (and must agree with any
    architecture fields the config also gives); otherwise the encoder is built from ``config.config`` (randomly
    initialised, or left uninitialised with ``init_weights=False`` for callers that load every weight next). The
    returned config rebuilds the same architecture offline, so a saved model never needs the weights' source.
    """
    config = copy.deepcopy(config)
    if config.pretrained is not None and (load_pretrained or config.config is None):
        encoder = CLIPPatchEncoder.from_pretrained(config.pretrained, config.trainable_layers, config.patch_ln_post)
        fields = encoder.config_fields
        if config.config is not None:
            for key in ("hidden_size", "num_hidden_layers", "image_size", "patch_size"):
                if key in config.config and config.config[key] != fields[key]:
                    raise ConfigError(
                        f"{prefix}.config.{key}",
                        f"is {config.config[key]} but the weights '{config.pretrained}' have {fields[key]}",
                    )
    else:
        assert config.config is not None  # validate() guarantees pretrained or config
        encoder = CLIPPatchEncoder.from_config(
            config.config, config.trainable_layers, config.patch_ln_post, init_weights=init_weights
        )
    encoder.set_gradient_checkpointing(config.gradient_checkpointing)
    config.config = encoder.config_fields  # canonical (complete) field set, so configs compare equal after a reload
    return encoder, config
