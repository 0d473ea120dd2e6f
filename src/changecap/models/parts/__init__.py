"""Building blocks shared by the systems: CLIP patch encoder, Transformer caption decoder, decoding, attention,
2-D positions. A part knows nothing about the system it sits in; systems compose parts by injection."""

from __future__ import annotations

from changecap.models.parts.attention import MultiheadAttention
from changecap.models.parts.caption_decoder import CaptionDecoderConfig, DecoderCache, TransformerCaptionDecoder
from changecap.models.parts.clip_encoder import VIT_B16_CONFIG, CLIPPatchEncoder, EncoderConfig, build_clip_encoder
from changecap.models.parts.decoding import beam_search, generate, greedy_search
from changecap.models.parts.position import PositionEmbedding2D

__all__ = [
    "VIT_B16_CONFIG",
    "CLIPPatchEncoder",
    "CaptionDecoderConfig",
    "DecoderCache",
    "EncoderConfig",
    "MultiheadAttention",
    "PositionEmbedding2D",
    "TransformerCaptionDecoder",
    "beam_search",
    "build_clip_encoder",
    "generate",
    "greedy_search",
]
