"""DFM (``dfm.md``): CLIP ViT → spatio-temporal extractor and direct difference, frozen change-detection prior →
joint feature modelling → the Transformer caption decoder HiSem uses; the [CLS] difference and a projected caption
embedding feed TGCL (:func:`~changecap.models.dfm.tgcl.tgcl_loss`).

    images [B, 2, 3, S, S] ─ ViT (both dates in one call) → E_1, E_2 [B, N, D], c_1, c_2 [B, D]
                           ─ spatio-temporal extractor(E_1, E_2)           → F_st [B, N, D]
                           ─ prior (frozen detector, projected)            → P [B, N, D]
                           ─ JFM(E_1, E_2, F_st, P)                        → F_j [B, N, D] = decoder memory
    TGCL: v = c_2 − c_1 [B, D];  u = text_proj(sentence embedding) [B, D];  scale exp(logit_scale)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from changecap.errors import ConfigError, ModelError
from changecap.models.contract import ChangeModel, Decoding, OnnxExport, RawPrediction
from changecap.models.dfm.config import DFMConfig
from changecap.models.dfm.jfm import JointFeatureModelling
from changecap.models.dfm.prior import ChangePrior
from changecap.models.dfm.temporal import SpatioTemporalExtractor
from changecap.models.onnx_graphs import step_decoder_export
from changecap.models.parts.caption_decoder import TransformerCaptionDecoder
from changecap.models.parts.clip_encoder import build_clip_encoder
from changecap.models.parts.decoding import generate, word_attention


@dataclass
class DFMOutput:
    """Teacher-forced logits [B, T, V] and the [CLS] differences v [B, D] (TGCL's visual side)."""

    logits: torch.Tensor
    visual: torch.Tensor


class DFM(ChangeModel):
    """DFM composed from its parts (module docstring); ``prior`` is None when the config disables it."""

    def __init__(
        self,
        encoder: nn.Module,
        temporal: SpatioTemporalExtractor,
        prior: ChangePrior | None,
        jfm: JointFeatureModelling,
        decoder: TransformerCaptionDecoder,
        text_dim: int,
        logit_scale_init: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.temporal = temporal
        self.prior = prior
        self.jfm = jfm
        self.decoder = decoder
        dim = decoder.config.dim
        self.text_proj = nn.Linear(text_dim, dim)  # W_t: sentence embedding → the visual width
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))  # s; the scale is min(exp(s), 100)

    # ------------------------------------------------------------------ stages
    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image pairs [B, 2, 3, S, S] → (E_1, E_2 [B, N, D], c_1, c_2 [B, D]); both dates in one encoder call."""
        if image.dim() != 5 or image.shape[1] != 2:
            raise ModelError(f"DFM expects image pairs [B, 2, 3, S, S], got {list(image.shape)}")
        tokens, cls = self.encoder(image.flatten(0, 1), with_cls=True)  # [2B, N, D], [2B, D]; rows 2i, 2i+1
        tokens, cls = tokens.unflatten(0, (-1, 2)), cls.unflatten(0, (-1, 2))  # [B, 2, N, D], [B, 2, D]
        return tokens[:, 0], tokens[:, 1], cls[:, 0], cls[:, 1]

    def memory(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image pairs → (decoder memory F_j [B, N, D], [CLS] differences v [B, D])."""
        e1, e2, c1, c2 = self.encode(image)
        f_st = self.temporal(e1, e2)  # [B, N, D]
        prior = self.prior(image) if self.prior is not None else None  # [B, N, D]
        return self.jfm(e1, e2, f_st, prior), c2 - c1

    def text_embedding(self, sentence: torch.Tensor) -> torch.Tensor:
        """Frozen sentence embeddings [B, text_dim] → u [B, D] (TGCL's text side)."""
        return self.text_proj(sentence)

    # ------------------------------------------------------------------ training
    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> DFMOutput:
        """Teacher forcing: image pairs and captions ``tokens`` [B, T] → logits [B, T, V] and v [B, D]."""
        memory, visual = self.memory(image)
        return DFMOutput(logits=self.decoder(memory, tokens), visual=visual)

    # ------------------------------------------------------------------ the model contract
    @property
    def image_size(self) -> int:
        return int(self.encoder.image_size)

    @property
    def compile_target(self) -> nn.Module:
        return self.encoder

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        """Token-id captions (greedy, or beam search with ``beam_size`` > 1), no change probability; on request the
        decoder's cross-attention over F_j's patch grid per word (:func:`~changecap.models.parts.decoding.
        word_attention`)."""
        memory, _ = self.memory(images)  # [B, N, D]
        seqs = generate(self.decoder, memory, decoding.max_length or self.decoder.max_length,
                        decoding.beam_size or 1, decoding.length_penalty or 0.0)  # fmt: skip
        maps = word_attention(self.decoder, memory, seqs) if decoding.attention_maps else None
        return RawPrediction(captions=seqs, attention_maps=maps)

    def onnx_export(self, image_size: int, batch: int = 2) -> OnnxExport:
        """The encoder graph (ViT, extractor, prior, JFM → memory) and the decoder's step graph."""

        def memory(images: torch.Tensor) -> tuple[torch.Tensor, None]:
            return self.memory(images)[0], None

        meta = {"architecture": self.architecture, "capabilities": self.capabilities.names()}
        return step_decoder_export(self, memory, self.decoder, image_size, batch, meta)

    # ------------------------------------------------------------------ introspection
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups; the prior's detector is frozen and appears in none."""
        groups = {
            "encoder": list(self.encoder.parameters()),
            "temporal": list(self.temporal.parameters()),
            "jfm": list(self.jfm.parameters()),
            "decoder": list(self.decoder.parameters()),
            "contrastive": [*self.text_proj.parameters(), self.logit_scale],
        }
        if self.prior is not None:
            groups["prior"] = [*self.prior.proj.parameters(), self.prior.position]
        return groups


def build_dfm(config: DFMConfig, load_pretrained: bool = True, init_weights: bool = True) -> DFM:
    """Instantiate DFM. With ``load_pretrained``, CLIP weights come from ``encoder.pretrained`` and the prior's from
    ``prior.model_dir`` (a trained ``change_detection`` or ``semantic_cc`` directory, whose config and preprocessing
    are recorded in the returned model's config); otherwise both are built from their recorded architectures
    (weights loaded next by ``load_model``). The parts are created in a fixed order, so the initialisation is fixed
    per seed."""
    config.validate()
    config = copy.deepcopy(config)
    encoder, config.encoder = build_clip_encoder(config.encoder, load_pretrained, init_weights)
    config.validate()
    dim, grid = int(config.encoder.hidden_size), int(config.encoder.grid_size)
    temporal = SpatioTemporalExtractor(dim, grid, config.temporal)
    prior = build_prior(config, dim, grid, load_pretrained) if config.prior.enabled else None
    jfm = JointFeatureModelling(dim, config.jfm, with_prior=prior is not None)
    decoder = TransformerCaptionDecoder(config.decoder)
    model = DFM(encoder, temporal, prior, jfm, decoder, config.text_dim, config.logit_scale_init)
    model.config = config
    return model


def build_prior(config: DFMConfig, dim: int, grid: int, load_pretrained: bool) -> ChangePrior:
    """The frozen detector (from ``prior.model_dir`` or its recorded config) wrapped as :class:`ChangePrior`; fills
    ``config.prior`` with the detector's architecture and preprocessing so the saved DFM rebuilds it offline."""
    from changecap.models.preprocess import PreprocessConfig
    from changecap.models.registry import architecture_of, config_from_dict

    p = config.prior
    if p.model_dir is not None and (load_pretrained or p.config is None):
        from changecap.models.io import load_change_prior

        folder = Path(p.model_dir).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model.prior.model_dir '{p.model_dir}': not a directory (train the detector first)")
        try:
            detector, detector_config = load_change_prior(folder)
        except ModelError as e:
            raise ModelError(f"model.prior.model_dir '{p.model_dir}': {e}") from None
        pre = PreprocessConfig.load(folder, default_image_size=int(detector.image_size))
        p.config = detector_config.to_dict()
        p.image_size, p.mean, p.std = pre.image_size, list(pre.mean), list(pre.std)
    else:
        assert p.config is not None  # PriorConfig.validate: model_dir or config
        # recorded configs of DFM models saved before the prior could be another architecture have no "architecture"
        detector_config = config_from_dict({"architecture": "change_detection", **p.config}, "model.prior.config")
        spec = architecture_of(detector_config)
        if spec.change_prior is None:
            raise ConfigError("model.prior.config.architecture", f"{spec.name} has no change-detection branch")
        detector = spec.change_prior(detector_config, load_pretrained=False)
    size = int(p.image_size or detector.image_size)
    p.image_size = size
    return ChangePrior(detector, p.level, dim, grid, size, p.mean, p.std, p.input_mean, p.input_std)
