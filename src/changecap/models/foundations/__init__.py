"""Pretraining modules of the foundation-model stand-ins (``changecap pretrain TARGET``).

Each target is an ``nn.Module`` built from a plain config dataclass: ``forward(batch)`` returns named loss terms
(the pretraining loop sums and logs them) and ``save_pretrained(out_dir)`` writes the directory the systems load
where the real weights would go.

* ``sam`` (:class:`SAMPretrainer`): a transformers ``SamVisionModel`` trained on land-cover maps; loads through
  Semantic-CC's ``model.encoder.pretrained`` as ``facebook/sam-vit-large`` does.
"""

from __future__ import annotations

from changecap.models.foundations.sam import SAM_CPU, SAMPretrainConfig, SAMPretrainer

__all__ = ["SAM_CPU", "SAMPretrainConfig", "SAMPretrainer"]
