"""DFM (``dfm.md``): a ViT, a frozen change-detection prior, joint feature modelling and a caption decoder, trained
with the text-guided gated contrastive loss :func:`tgcl_loss`."""

from changecap.models.dfm.tgcl import tgcl_loss

__all__ = ["tgcl_loss"]
