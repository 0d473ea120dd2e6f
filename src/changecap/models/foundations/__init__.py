"""Foundations that ``changecap pretrain`` builds from single-date data, in the formats the systems load.

One module per target, each exposing ``TARGET`` (the contract and the registry are in ``target.py``). Each target is
an ``nn.Module`` built from a plain config dataclass: ``forward(batch)`` returns named loss terms (the pretraining loop
sums and logs them) and ``save_pretrained(out_dir)`` writes the directory the systems load where the real weights
would go.

    clip.py       CLIPModel (vision + text towers), contrastive; loads as ``model.encoder.pretrained``
    lm.py         small causal LM + tokenizer on caption text; loads as Semantic-CC's ``model.caption.llm``
    sam.py        a transformers ``SamVisionModel`` trained on land-cover maps; loads through Semantic-CC's
                  ``model.encoder.pretrained`` as ``facebook/sam-vit-large`` does
    qformer.py    a BLIP-2 Q-Former trained with BLIP-2's first-stage objectives over a frozen SAM; loads through
                  Semantic-CC's ``model.caption.qformer_pretrained`` as a BLIP-2 checkpoint does
    tokenizer.py  the byte-level BPE tokenizer the text parts train on the training captions
"""

from __future__ import annotations

from changecap.models.foundations.qformer import QFORMER_CPU, QFormerPretrainConfig, QFormerPretrainer
from changecap.models.foundations.sam import SAM_CPU, SAMPretrainConfig, SAMPretrainer
from changecap.models.foundations.target import (
    TARGETS,
    PretrainingModule,
    PretrainInputs,
    PretrainTarget,
    get_target,
    target_names,
)

__all__ = [
    "QFORMER_CPU",
    "SAM_CPU",
    "TARGETS",
    "PretrainInputs",
    "PretrainTarget",
    "PretrainingModule",
    "QFormerPretrainConfig",
    "QFormerPretrainer",
    "SAMPretrainConfig",
    "SAMPretrainer",
    "get_target",
    "target_names",
]
