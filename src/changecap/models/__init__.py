"""Change-captioning models: CLIP patch encoder, fusions (HiSem, plain baseline), caption decoder, decoding, I/O.

Typical use::

    from changecap.models import build_model, paper_config, save_model, load_model
    model = build_model(paper_config(vocab_size=len(vocab)))
    seqs, change_prob = model.eval().caption(images)          # images [B, 2, 3, 224, 224], CLIP-preprocessed
"""

from __future__ import annotations

from changecap.models.baseline import ConcatFusion, ConcatFusionConfig
from changecap.models.caption_decoder import CaptionDecoderConfig, DecoderCache, TransformerCaptionDecoder
from changecap.models.clip_encoder import VIT_B16_CONFIG, CLIPPatchEncoder
from changecap.models.config import EncoderConfig, ModelConfig, build_model, paper_config, tiny_config
from changecap.models.decoding import beam_search, generate, greedy_search
from changecap.models.hisem import HiSem
from changecap.models.hisem_fusion import HiSemFusion, HiSemFusionConfig
from changecap.models.io import load_model, load_model_bundle, save_model
from changecap.models.output import CaptionModelOutput

__all__ = [
    "VIT_B16_CONFIG",
    "CLIPPatchEncoder",
    "CaptionDecoderConfig",
    "CaptionModelOutput",
    "ConcatFusion",
    "ConcatFusionConfig",
    "DecoderCache",
    "EncoderConfig",
    "HiSem",
    "HiSemFusion",
    "HiSemFusionConfig",
    "ModelConfig",
    "TransformerCaptionDecoder",
    "beam_search",
    "build_model",
    "generate",
    "greedy_search",
    "load_model",
    "load_model_bundle",
    "paper_config",
    "save_model",
    "tiny_config",
]
