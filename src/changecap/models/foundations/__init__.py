"""Pretraining modules of the foundation-model stand-ins (``changecap pretrain TARGET``).

Each target is an ``nn.Module`` built from a plain config dataclass: ``forward(batch)`` returns named loss terms
(the pretraining loop sums and logs them) and ``save_pretrained(out_dir)`` writes the directory the systems load
where the real weights would go.

* ``sam`` (:class:`SAMPretrainer`): a transformers ``SamVisionModel`` trained on land-cover maps; loads through
  Semantic-CC's ``model.encoder.pretrained`` as ``facebook/sam-vit-large`` does.
* ``qformer`` (:class:`QFormerPretrainer`): a BLIP-2 Q-Former trained with BLIP-2's first-stage objectives over a
  frozen SAM; loads through Semantic-CC's ``model.caption.qformer_pretrained`` as a BLIP-2 checkpoint does.
"""

from __future__ import annotations

from changecap.models.foundations.qformer import QFORMER_CPU, QFormerPretrainConfig, QFormerPretrainer
from changecap.models.foundations.sam import SAM_CPU, SAMPretrainConfig, SAMPretrainer

__all__ = ["QFORMER_CPU", "SAM_CPU", "QFormerPretrainConfig", "QFormerPretrainer", "SAMPretrainConfig", "SAMPretrainer"]
