"""Foundations that ``changecap pretrain`` builds from single-date data, in the formats the systems load.

One module per target, each exposing ``TARGET`` (the contract and the registry are in ``target.py``):

    clip.py       CLIPModel (vision + text towers), contrastive; loads as ``model.encoder.pretrained``
    lm.py         small causal LM + tokenizer on caption text; loads as Semantic-CC's ``model.caption.llm``
    tokenizer.py  the byte-level BPE tokenizer the text parts train on the training captions
"""

from changecap.models.foundations.target import (
    TARGETS,
    PretrainingModule,
    PretrainInputs,
    PretrainTarget,
    get_target,
    target_names,
)

__all__ = ["TARGETS", "PretrainInputs", "PretrainTarget", "PretrainingModule", "get_target", "target_names"]
