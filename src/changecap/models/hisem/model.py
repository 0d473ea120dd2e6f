"""HiSem change captioner: encoder → fusion → caption decoder, composed by injection (``docs/architecture.md``).

The class knows nothing about what the three parts are inside: ``HiSem(CLIPPatchEncoder, HiSemFusion,
TransformerCaptionDecoder)`` is the paper model, ``HiSem(CLIPPatchEncoder, ConcatFusion, ...)`` the plain baseline
that every BDAM/HASD claim is measured against, and ``encoder=None`` a model that runs from precomputed backbone
tokens (e.g. converted without the CLIP weights). The attribute names ``encoder``, ``fusion`` and ``decoder`` are a
public contract (optimiser groups, checkpoints and the converter address parameters through them). The model
contract (``models/contract.py``): :meth:`HiSem.infer` (captions as token ids, the router's change probability) and
:meth:`HiSem.onnx_export` (the encoder and decoder-step graphs).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from changecap.errors import ModelError
from changecap.models.contract import ChangeModel, Decoding, OnnxExport, RawPrediction
from changecap.models.hisem.config import HiSemConfig, PlainConfig
from changecap.models.hisem.fusion import HiSemFusion
from changecap.models.hisem.hasd import HASD
from changecap.models.hisem.moe import SparseMoE
from changecap.models.hisem.output import CaptionModelOutput
from changecap.models.hisem.plain import ConcatFusion
from changecap.models.onnx_graphs import step_decoder_export
from changecap.models.parts.caption_decoder import TransformerCaptionDecoder
from changecap.models.parts.clip_encoder import build_clip_encoder
from changecap.models.parts.decoding import generate, word_attention


class HiSem(ChangeModel):
    """Remote-sensing change captioner: image pair [B, 2, 3, S, S] → caption logits / generated token ids.

    ``fusion`` must map ``(f_before [B, L, D], f_after [B, L, D], route=None)`` to ``(memory [B, L, D],
    router_logits [B, 2] | None)``; if it has an ``aux_loss`` attribute (a 0-dim tensor set by its last forward)
    that loss is passed on in :class:`CaptionModelOutput`.
    """

    def __init__(self, encoder: nn.Module | None, fusion: nn.Module, decoder: TransformerCaptionDecoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.fusion = fusion
        self.decoder = decoder

    # ------------------------------------------------------------------ stages
    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image pair [B, 2, 3, S, S] → (f_before, f_after), each [B, L, D]; both dates in one encoder call."""
        if self.encoder is None:
            raise ModelError("this model has no image encoder (built without backbone weights); pass backbone tokens")
        if image.dim() != 5 or image.shape[1] != 2:
            raise ModelError(f"expected an image pair tensor [B, 2, 3, H, W], got {list(image.shape)}")
        tokens = self.encoder(image.flatten(0, 1))  # [2B, L, D]; row 2i is item i's before image, 2i+1 its after
        tokens = tokens.unflatten(0, (-1, 2))  # [B, 2, L, D] (-1, not b: a traced graph keeps the batch dynamic)
        return tokens[:, 0], tokens[:, 1]

    def fuse(
        self, f_before: torch.Tensor, f_after: torch.Tensor, route: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone tokens of both dates → (memory [B, L, D], router_logits [B, 2] | None)."""
        return self.fusion(f_before, f_after, route=route)

    def _aux_loss(self, like: torch.Tensor) -> torch.Tensor:
        aux = getattr(self.fusion, "aux_loss", None)
        if isinstance(aux, torch.Tensor):
            return aux
        return torch.zeros((), dtype=torch.float32, device=like.device)

    # ------------------------------------------------------------------ training
    def forward_features(
        self,
        f_before: torch.Tensor,
        f_after: torch.Tensor,
        tokens: torch.Tensor,
        route: torch.Tensor | None = None,
    ) -> CaptionModelOutput:
        """Teacher forcing from backbone tokens [B, L, D] ×2 and captions ``tokens`` [B, T] → logits [B, T, V]."""
        memory, router_logits = self.fuse(f_before, f_after, route)
        logits = self.decoder(memory, tokens)  # [B, T, V]
        return CaptionModelOutput(logits=logits, router_logits=router_logits, aux_loss=self._aux_loss(logits))

    def forward(
        self, image: torch.Tensor, tokens: torch.Tensor, route: torch.Tensor | None = None
    ) -> CaptionModelOutput:
        """Teacher forcing from an image pair [B, 2, 3, S, S] and ``tokens`` [B, T].

        ``route`` ([B], 1 = changed) forces the fusion's per-sample path (ground-truth routing during training).
        """
        f_before, f_after = self.encode(image)
        return self.forward_features(f_before, f_after, tokens, route)

    # ------------------------------------------------------------------ inference
    def generate(
        self,
        memory: torch.Tensor,
        max_length: int = 41,
        beam_size: int = 1,
        length_penalty: float = 0.0,
        use_cache: bool = True,
    ) -> list[list[int]]:
        """Decode captions from fused memory [B, L, D] → B token-id lists (``<START>`` first, ``<END>`` last if any)."""
        return generate(self.decoder, memory, max_length, beam_size, length_penalty, use_cache)

    @torch.no_grad()
    def caption_features(
        self,
        f_before: torch.Tensor,
        f_after: torch.Tensor,
        max_length: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.0,
    ) -> tuple[list[list[int]], torch.Tensor | None]:
        """Captions and change probability [B] (``None`` without a router) from backbone tokens."""
        memory, router_logits = self.fuse(f_before, f_after, None)
        seqs = self.generate(memory, max_length or self.decoder.max_length, beam_size, length_penalty)
        return seqs, change_probability(router_logits)

    @torch.no_grad()
    def caption(
        self,
        image: torch.Tensor,
        max_length: int | None = None,
        beam_size: int = 1,
        length_penalty: float = 0.0,
    ) -> tuple[list[list[int]], torch.Tensor | None]:
        """Image pair [B, 2, 3, S, S] → (token-id lists, change probability [B] or ``None``).

        The change probability is ``softmax(router_logits)[:, 1]`` (class 1 = changed); routing follows the router
        (no ground truth at inference). Call ``model.eval()`` first, as for any inference.
        """
        f_before, f_after = self.encode(image)
        return self.caption_features(f_before, f_after, max_length, beam_size, length_penalty)

    # ------------------------------------------------------------------ the model contract
    @property
    def image_size(self) -> int | None:
        """The encoder's input side; None without an encoder (the model then runs from backbone tokens only)."""
        return None if self.encoder is None else int(self.encoder.image_size)

    @property
    def compile_target(self) -> nn.Module:
        return self if self.encoder is None else self.encoder

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        """Token-id captions, with a router (HiSem, not the plain baseline) its change probability, and on request
        the decoder's cross-attention over the fused grid per word (:func:`~changecap.models.parts.decoding.
        word_attention`)."""
        memory, router_logits = self.fuse(*self.encode(images), None)  # [B, L, D]
        seqs = self.generate(memory, decoding.max_length or self.decoder.max_length, decoding.beam_size or 1,
                             decoding.length_penalty or 0.0)  # fmt: skip
        maps = word_attention(self.decoder, memory, seqs) if decoding.attention_maps else None
        return RawPrediction(captions=seqs, change_probability=change_probability(router_logits), attention_maps=maps)

    def onnx_export(self, image_size: int, batch: int = 2) -> OnnxExport:
        """The encoder graph (backbone tokens → fusion → memory, router) and the decoder's step graph. HASD's
        routing and the MoE's dispatch switch to their dense forms (same values, no data-dependent shapes), and the
        plain fusion's torch encoder layers to changecap's (a dynamic batch), so this model is meant for export only
        afterwards."""
        for module in self.fusion.modules():
            if isinstance(module, HASD):
                module.dense_routing = True
            elif isinstance(module, SparseMoE):
                module.dense_dispatch = True
        if isinstance(self.fusion, ConcatFusion):
            self.fusion.use_traceable_layers()

        def memory(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            memory, router = self.fuse(*self.encode(images), None)
            return memory, None if router is None else router.float().softmax(dim=-1)[:, 1]

        meta = {"architecture": self.architecture, "capabilities": self.capabilities.names()}
        return step_decoder_export(self, memory, self.decoder, image_size, batch, meta)

    # ------------------------------------------------------------------ introspection
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups by part (the official code trains them with three optimisers of the same settings)."""
        parts = {"encoder": self.encoder, "fusion": self.fusion, "decoder": self.decoder}
        return {name: list(m.parameters()) for name, m in parts.items() if m is not None}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part and in total, plus how many are trainable (``requires_grad``)."""
        parts: dict[str, nn.Module | None] = {"encoder": self.encoder, "fusion": self.fusion, "decoder": self.decoder}
        out = {k: sum(p.numel() for p in m.parameters()) if m is not None else 0 for k, m in parts.items()}
        out["total"] = sum(p.numel() for p in self.parameters())
        out["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return out


def change_probability(router_logits: torch.Tensor | None) -> torch.Tensor | None:
    """The router's P(changed) [B] (class 1), in float32; None for a fusion without a router."""
    return None if router_logits is None else router_logits.float().softmax(dim=-1)[:, 1]


def build_hisem(config: HiSemConfig | PlainConfig, load_pretrained: bool = True, init_weights: bool = True) -> HiSem:
    """Instantiate the captioner ``config`` describes (the registry's builder for ``hisem`` and ``plain``).

    With ``load_pretrained=True`` and ``encoder.pretrained`` set, the CLIP weights are loaded from that id/directory;
    otherwise the encoder is built (randomly initialised) from ``encoder.config``, which is how ``load_model``
    rebuilds a saved model before loading its own weights (no network). ``init_weights=False`` skips that random
    initialisation (values are garbage) for callers that load every weight right after. ``model.config`` is a copy
    of ``config`` in which ``encoder.config`` holds the encoder's complete architecture fields, so saving it
    rebuilds offline. Parts are created encoder → fusion → decoder, which fixes the random initialisation per seed.
    """
    config.validate()
    config = copy.deepcopy(config)
    encoder = None
    if config.encoder is not None:
        encoder, config.encoder = build_clip_encoder(config.encoder, load_pretrained, init_weights)
        config.validate()
    fusion: nn.Module = HiSemFusion(config.fusion) if isinstance(config, HiSemConfig) else ConcatFusion(config.fusion)
    model = HiSem(encoder, fusion, TransformerCaptionDecoder(config.decoder))
    model.config = config
    return model
