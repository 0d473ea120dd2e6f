"""The ``qformer`` pretraining target: a BLIP-2 Q-Former learnt over a frozen SAM from single dates and captions.

BLIP-2's first stage (Li et al., 2023), with its three objectives sharing one Q-Former (transformers'
``Blip2QFormerModel``; its layers have a query branch and a text branch, ``use_qformer_text_input``):

* **ITC**, image-text contrastive: the queries' outputs and the text's ``[CLS]`` output are projected to
  ``embed_dim`` and L2-normalised; an image-text similarity is the maximum over queries of query · text, divided
  by a learnt temperature (start 0.07, kept in [0.001, 0.5]). Queries and text do not see each other. Two items
  whose sampled captions are the same text count as positives of each other (soft targets).
* **ITM**, image-text matching: queries and text attend to each other; a linear head on every query output gives a
  match / no-match logit pair, averaged over the queries. Each image gets a hard negative text and each text a
  hard negative image, drawn from the batch with probabilities softmax(ITC similarity), positives excluded.
* **ITG**, image-grounded text generation: the text, starting with a ``[DEC]`` token, is decoded causally; every
  text token sees all queries and the text before it, the queries see only each other (BLIP-2's multimodal
  causal mask). Cross-entropy over the next token, label smoothing 0.1 as BLIP-2.

The image side is the frozen ``sam`` stand-in (any SAM checkpoint) read through ``ln_vision``. Which SAM feature:
``features="tokens"`` (default) takes the last block's tokens [B, L, hidden_size], the stream Semantic-CC's caption
path starts from (raw tokens → ``neck.cc_proj`` → CC tokens → ``ln_vision`` → Q-Former) and the kind of feature
BLIP-2's Q-Former reads from its ViT; the Q-Former's ``encoder_hidden_size`` is then the SAM width, which
Semantic-CC's ``neck.cc_dim`` matches (64 in ``configs/semantic_cc_synthcc_cpu.yaml``). ``features="neck"`` takes
SAM's neck output [B, L, output_channels] instead.

Text: a transformers tokenizer (``tokenizer``: a directory or Hub id) splits the caption into pieces; three ids
after its vocabulary are this module's own ``[CLS]``, ``[DEC]`` and ``[END]``, so any tokenizer works whatever
special tokens it has. Blip2QFormerModel has no word embeddings: this module adds BERT-style word and position
embeddings and an LM head tied to the word embeddings, as BLIP-2's Q-Former BERT has. They, the projections, the
ITM head and the text branch of every layer are pretraining-only and are not saved.

In-batch negatives are per process (BLIP-2 gathers them over GPUs; here each process contrasts its own batch).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from changecap.data.files import write_folder
from changecap.errors import ConfigError, ModelError, first_line
from changecap.models.foundations.common import load_sam_vision_encoder
from changecap.models.foundations.target import PretrainInputs, PretrainTarget
from changecap.models.semantic_cc.caption import clean_caption
from changecap.schema import require

#: Blip2QFormerConfig fields of the CPU-sized stand-in: the Q-Former of ``configs/semantic_cc_synthcc_cpu.yaml``
#: (``encoder_hidden_size`` is the frozen SAM's feature width, filled in when not given)
QFORMER_CPU: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "cross_attention_frequency": 1,
    "initializer_range": 0.125,
}

FORMAT_TAG = "changecap-qformer"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


@dataclass
class QFormerPretrainConfig:
    """The ``qformer`` target: a BLIP-2 Q-Former over a frozen SAM, with BLIP-2's first-stage heads."""

    sam: str  # the frozen image encoder: a `sam` target's directory, or any SAM checkpoint (Hub id or directory)
    tokenizer: str  # a transformers tokenizer (directory or Hub id): the `clip` or `lm` target's, or any other
    features: Literal["tokens", "neck"] = "tokens"  # SAM's last-block tokens or its neck output (see module doc)
    image_size: int | None = None  # input size; None: the SAM checkpoint's (else its position tables are resized)
    # Blip2QFormerConfig fields; initializer_range defaults to 1/√hidden_size (not BERT's 0.02: see qformer_config)
    qformer: dict[str, Any] = field(default_factory=lambda: dict(QFORMER_CPU))
    num_query_tokens: int = 8
    embed_dim: int = 64  # width of the ITC projections
    max_text_len: int = 48  # caption tokens kept, [CLS]/[DEC] and [END] included
    temperature: float = 0.07  # the ITC temperature's start (learnt, kept in [0.001, 0.5])
    label_smoothing: float = 0.1  # of the ITG cross-entropy
    clean_text: bool = True  # lower-case and strip punctuation before tokenising (as Semantic-CC's captions)

    def validate(self, prefix: str = "model") -> None:
        require(bool(self.sam), f"{prefix}.sam", "give a SAM checkpoint (the `sam` target's directory)")
        require(bool(self.tokenizer), f"{prefix}.tokenizer", "give a transformers tokenizer directory")
        require(self.image_size is None or self.image_size > 0, f"{prefix}.image_size", "must be positive or null")
        require(self.num_query_tokens >= 1, f"{prefix}.num_query_tokens", f"must be >= 1, got {self.num_query_tokens}")
        require(self.embed_dim >= 1, f"{prefix}.embed_dim", f"must be >= 1, got {self.embed_dim}")
        require(self.max_text_len >= 3, f"{prefix}.max_text_len", f"must be >= 3, got {self.max_text_len}")
        require(0.001 <= self.temperature <= 0.5, f"{prefix}.temperature", f"must be in [0.001, 0.5], got "
                                                                          f"{self.temperature}")  # fmt: skip
        require(0.0 <= self.label_smoothing < 1.0, f"{prefix}.label_smoothing", "must be in [0, 1)")
        qformer_config(self.qformer, None, f"{prefix}.qformer")


def qformer_config(fields: dict[str, Any], vision_width: int | None, prefix: str) -> Any:
    """``Blip2QFormerConfig`` from plain fields (text branch on); one-line errors naming the field."""
    from transformers import Blip2QFormerConfig

    known = set(Blip2QFormerConfig().to_dict())
    for key in fields:
        if key not in known:
            raise ConfigError(f"{prefix}.{key}", "not a Blip2QFormerConfig field")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        value = fields.get(key, getattr(Blip2QFormerConfig(), key))
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0, f"{prefix}.{key}",
                f"must be a positive integer, got {value!r}")  # fmt: skip
    hidden = fields.get("hidden_size", Blip2QFormerConfig().hidden_size)
    heads = fields.get("num_attention_heads", Blip2QFormerConfig().num_attention_heads)
    require(hidden % heads == 0, f"{prefix}.num_attention_heads", f"must divide hidden_size {hidden}")
    given = fields.get("encoder_hidden_size")
    if vision_width is not None and given is not None and given != vision_width:
        raise ConfigError(f"{prefix}.encoder_hidden_size", f"is {given} but the SAM features are {vision_width} wide")
    # a from-scratch Q-Former starts at 1/√width unless told: BERT's 0.02 is sized for 768 wide (and BLIP-2 starts
    # from pretrained BERT); at width 64 it leaves every attention uniform, so outputs hardly depend on the input
    fields = {"initializer_range": hidden**-0.5, **fields, "use_qformer_text_input": True}
    if vision_width is not None:
        fields["encoder_hidden_size"] = vision_width
    try:
        cfg = Blip2QFormerConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(prefix, f"rejected by Blip2QFormerConfig: {' '.join(str(e).split())}") from None
    cfg._attn_implementation = "sdpa"
    return cfg


def pick_captions(captions: list[list[str]], generator: torch.Generator | None) -> list[str]:
    """One caption per item, uniformly at random (``generator``, or torch's global RNG)."""
    out = []
    for i, options in enumerate(captions):
        if not options:
            raise ModelError(f"batch item {i} has no caption: the qformer target needs captioned images")
        k = int(torch.randint(len(options), (1,), generator=generator)) if len(options) > 1 else 0
        out.append(options[k])
    return out


class QFormerPretrainer(nn.Module):
    """BLIP-2 first-stage pretraining; ``forward(batch)`` → ``{"itc", "itm", "itg"}`` losses.

    ``batch["image"]`` [B, 3, S, S] (normalised as for the SAM), ``batch["captions"]`` list[list[str]] (one drawn per
    item and step with ``batch["generator"]`` when it is a ``torch.Generator``, else torch's global RNG).
    """

    def __init__(self, config: QFormerPretrainConfig) -> None:
        super().__init__()
        from transformers import Blip2QFormerModel

        config.validate()
        self.config = copy.deepcopy(config)
        sam, sam_fields = load_sam_vision_encoder(config.sam, config.image_size, "model.sam")
        self.image_size = int(sam_fields["image_size"])
        self.sam = sam.eval().requires_grad_(False)  # frozen: never trained, never in train mode
        width = int(sam_fields["hidden_size"] if config.features == "tokens" else sam_fields["output_channels"])
        self.vision_width = width
        cfg = qformer_config(config.qformer, width, "model.qformer")
        dim, std = cfg.hidden_size, cfg.initializer_range
        self.tokenizer = load_tokenizer(config.tokenizer)
        base = len(self.tokenizer)
        self.cls_id, self.dec_id, self.end_id = base, base + 1, base + 2
        self.ln_vision = nn.LayerNorm(width)
        self.qformer = Blip2QFormerModel(cfg)
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_query_tokens, dim) * std)  # [1, Q, D]
        # pretraining-only parts (dropped by save_pretrained)
        self.word_embeddings = nn.Embedding(base + 3, dim)
        self.position_embeddings = nn.Embedding(config.max_text_len, dim)
        for emb in (self.word_embeddings, self.position_embeddings):
            nn.init.normal_(emb.weight, std=std)
        self.vision_proj = nn.Linear(dim, config.embed_dim)
        self.text_proj = nn.Linear(dim, config.embed_dim)
        self.itm_head = nn.Linear(dim, 2)
        self.lm_transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=cfg.layer_norm_eps))
        self.lm_bias = nn.Parameter(torch.zeros(base + 3))
        self.temp = nn.Parameter(torch.tensor(float(config.temperature)))

    def train(self, mode: bool = True) -> QFormerPretrainer:
        super().train(mode)
        self.sam.eval()
        return self

    # ------------------------------------------------------------------ inputs
    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] → the frozen SAM's features [B, L, C] (last-block tokens or neck output)."""
        s = self.image_size
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (s, s):
            raise ModelError(f"the qformer target expects images [B, 3, {s}, {s}] (the SAM's image_size), got "
                             f"{list(images.shape)}")  # fmt: skip
        h = self.sam.patch_embed(images)  # [B, g, g, C]
        if self.sam.pos_embed is not None:
            h = h + self.sam.pos_embed
        for layer in self.sam.layers:
            h = layer(h)
        if self.config.features == "neck":
            return self.sam.neck(h).flatten(2).transpose(1, 2)  # [B, L, C_out]
        return h.flatten(1, 2)  # [B, L, C]

    def encode_text(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions → ids [B, T] = [CLS] pieces [END] (right-padded) and their mask [B, T] (1 = token)."""
        if self.config.clean_text:
            texts = [clean_caption(t) for t in texts]
        pieces = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        keep = self.config.max_text_len - 2
        rows = [[self.cls_id, *p[:keep], self.end_id] for p in pieces]
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)  # [B, T]; padding id 0 is masked out
        mask = torch.zeros(len(rows), length, dtype=torch.long)  # [B, T]
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        return ids.to(device), mask.to(device)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids [B, T] → word + position embeddings [B, T, D] (the Q-Former's own LayerNorm follows)."""
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.word_embeddings(ids) + self.position_embeddings(positions)  # [B, T, D]

    # ------------------------------------------------------------------ objectives
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        generator = batch.get("generator")
        generator = generator if isinstance(generator, torch.Generator) else None
        texts = pick_captions(batch["captions"], generator)
        if len(texts) != images.shape[0]:
            raise ModelError(f"the batch has {images.shape[0]} images but {len(texts)} caption lists")
        device = images.device
        v, img = self.image_embeddings(images)  # [B, L, C], [B, Q, E]
        ids, mask, txt = self.text_embeddings(texts, device)  # [B, T], [B, T], [B, E]: the [CLS] output
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)  # as BLIP-2: the learnt temperature stays in range
        sim = torch.einsum("iqe,je->ijq", img, txt).amax(dim=-1) / self.temp  # [B_img, B_txt]: best query per pair
        keys = [clean_caption(t) for t in texts] if self.config.clean_text else texts  # what the model reads
        same = torch.tensor([[a == b for b in keys] for a in keys], device=device)  # [B, B] equal captions
        losses = {"itc": self.itc_loss(sim, same), "itm": self.itm_loss(v, ids, mask, sim, same, generator)}
        losses["itg"] = self.itg_loss(v, ids, mask)
        return losses

    def itc_loss(self, sim: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Symmetric contrastive loss over the batch; equal captions share the target mass."""
        if sim.shape[0] < 2:  # one image: nothing to contrast (a zero that still reaches the weights)
            return sim.sum() * 0.0
        target = same.float() / same.float().sum(dim=1, keepdim=True)  # [B, B]; symmetric, so it serves both sides
        i2t = -(F.log_softmax(sim, dim=1) * target).sum(dim=1).mean()
        t2i = -(F.log_softmax(sim.t(), dim=1) * target).sum(dim=1).mean()
        return (i2t + t2i) / 2

    def itm_loss(
        self,
        v: torch.Tensor,
        ids: torch.Tensor,
        mask: torch.Tensor,
        sim: torch.Tensor,
        same: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Match / no-match over B positives, B hard-negative images and B hard-negative texts."""
        b = v.shape[0]
        if b < 2:  # no negative in the batch: a zero that still reaches every ITM weight
            return sum(p.sum() for p in self.itm_head.parameters()) * 0.0
        with torch.no_grad():
            neg_img = self._hard_negatives(sim.t(), same, generator)  # [B]: an image for each text
            neg_txt = self._hard_negatives(sim, same, generator)  # [B]: a text for each image
        rows = torch.arange(b, device=v.device)
        image_rows = torch.cat([rows, neg_img.to(v.device), rows])  # [3B]
        text_rows = torch.cat([rows, rows, neg_txt.to(v.device)])  # [3B]
        logits = self.itm_logits(v[image_rows], ids[text_rows], mask[text_rows])  # [3B, 2]
        labels = torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(v.device)
        return F.cross_entropy(logits, labels)

    def itm_logits(self, v: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """No-match / match logits [N, 2] of N (image features [N, L, C], text ids [N, T]) pairs: queries and text
        attend to each other, the head's outputs are averaged over the queries."""
        n = v.shape[0]
        q = self.query_tokens.expand(n, -1, -1)  # [N, Q, D]
        nq = q.shape[1]
        joint = torch.cat([q, self.embed_text(ids)], dim=1)  # [N, Q + T, D]
        joint_mask = torch.cat([torch.ones(n, nq, dtype=mask.dtype, device=v.device), mask], dim=1)
        out = self.qformer(query_embeds=joint, query_length=nq, attention_mask=joint_mask,
                           encoder_hidden_states=v).last_hidden_state  # fmt: skip  # [N, Q + T, D]
        return self.itm_head(out[:, :nq]).mean(dim=1)  # [N, 2]

    @staticmethod
    def _hard_negatives(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Row i's negative: drawn ∝ softmax(sim[i]) among the items whose caption differs from i's (uniform among
        the others when every caption in the batch is the same)."""
        weights = F.softmax(sim.float(), dim=1).masked_fill(same, 0.0)  # [B, B]
        empty = weights.sum(dim=1) <= 0
        if empty.any():
            others = ~torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
            weights[empty] = others[empty].float()
        return torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1)  # [B]

    def itg_logits(self, v: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T - 1, V] of the text with ``[DEC]`` first, decoded with the queries visible
        (BLIP-2's multimodal causal mask: queries see queries; text sees the queries and the text up to itself)."""
        b, t = ids.shape
        nq = self.query_tokens.shape[1]
        dec = ids.clone()
        dec[:, 0] = self.dec_id
        q = self.query_tokens.expand(b, -1, -1)  # [B, Q, D]
        joint = torch.cat([q, self.embed_text(dec)], dim=1)  # [B, Q + T, D]
        n = nq + t
        allowed = torch.zeros(n, n, dtype=torch.bool, device=v.device)  # [Q + T, Q + T]: row attends to column
        allowed[:, :nq] = True  # everyone sees the queries
        allowed[nq:, nq:] = torch.ones(t, t, dtype=torch.bool, device=v.device).tril()  # text: itself and before
        keys = torch.cat([torch.ones(b, nq, dtype=torch.bool, device=v.device), mask.bool()], dim=1)  # [B, Q + T]
        attn = allowed.unsqueeze(0) & keys.unsqueeze(1)  # [B, Q + T, Q + T]; no padding key is seen
        out = self.qformer(query_embeds=joint, query_length=nq, attention_mask=attn.unsqueeze(1),
                           encoder_hidden_states=v).last_hidden_state  # fmt: skip  # [B, Q + T, D]
        hidden = self.lm_transform(out[:, nq:-1])  # [B, T - 1, D]: position j predicts token j + 1
        return F.linear(hidden, self.word_embeddings.weight, self.lm_bias)  # [B, T - 1, V]: tied to the embeddings

    def itg_loss(self, v: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy over the caption pieces and ``[END]`` (label smoothing as configured)."""
        logits = self.itg_logits(v, ids, mask)  # [B, T - 1, V]
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # [B, T - 1]
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                               label_smoothing=self.config.label_smoothing)  # fmt: skip

    # ------------------------------------------------------------------ held-out figures
    def image_embeddings(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] → visual features after ``ln_vision`` [B, L, C] and the queries' ITC embeddings
        [B, Q, E] (L2-normalised)."""
        v = self.ln_vision(self.image_features(images))  # [B, L, C]
        q = self.query_tokens.expand(images.shape[0], -1, -1)  # [B, Q, D]
        query_out = self.qformer(query_embeds=q, encoder_hidden_states=v).last_hidden_state  # [B, Q, D]
        return v, F.normalize(self.vision_proj(query_out), dim=-1)  # [B, L, C], [B, Q, E]

    def text_embeddings(
        self, texts: list[str], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Captions → ids [B, T], mask [B, T] and the ``[CLS]`` output's ITC embedding [B, E] (L2-normalised; the
        text branch alone, no image)."""
        ids, mask = self.encode_text(texts, device)  # [B, T]
        text_out = self.qformer(query_embeds=self.embed_text(ids), query_length=0,
                                attention_mask=mask).last_hidden_state  # fmt: skip  # [B, T, D]
        return ids, mask, F.normalize(self.text_proj(text_out[:, 0]), dim=-1)  # [B, E]

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Held-out figures: the mean ``itc``, ``itm`` and ``itg`` losses (captions and ITM negatives drawn with a
        fixed seed); ITC retrieval recall@1/5 between the images and their distinct captions (an image→text hit at
        k when one of the image's own captions is among the k most similar texts; text→image likewise); ITM
        accuracy on every image with its first caption (match) and with the most ITC-similar caption that is not
        its own (no match); ITG next-token accuracy."""
        generator = torch.Generator().manual_seed(0)
        sums: dict[str, float] = {"itc": 0.0, "itm": 0.0, "itg": 0.0}
        batches_seen = 0
        image_embs, owners, feats = [], [], []
        correct_tokens, tokens = 0, 0
        for batch in batches:
            losses = self({**batch, "generator": generator})
            for name in sums:
                sums[name] += float(losses[name])
            batches_seen += 1
            texts = pick_captions(batch["captions"], generator)
            v, img = self.image_embeddings(batch["image"])
            ids, mask = self.encode_text(texts, v.device)
            image_embs.append(img)
            feats.append(v)
            owners.extend([clean_caption(c) if self.config.clean_text else c for c in caps]
                          for caps in batch["captions"])  # fmt: skip
            pred = self.itg_logits(v, ids, mask).argmax(dim=-1)  # [B, T - 1]
            valid = mask[:, 1:].bool()
            correct_tokens += int((pred == ids[:, 1:])[valid].sum())
            tokens += int(valid.sum())
        if not batches_seen:
            return {}
        out = {f"{k}_loss": v / batches_seen for k, v in sums.items()}
        device = image_embs[0].device
        img = torch.cat(image_embs)  # [I, Q, E]
        texts = list(dict.fromkeys(c for caps in owners for c in caps))  # distinct captions, first-seen order
        index = {t: j for j, t in enumerate(texts)}
        txt = torch.cat([self.text_embeddings(texts[i : i + 256], device)[2] for i in range(0, len(texts), 256)])
        relevant = torch.zeros(len(owners), len(texts), dtype=torch.bool, device=device)  # [I, T]
        for i, caps in enumerate(owners):
            relevant[i, [index[c] for c in caps]] = True
        sim = torch.einsum("iqe,te->itq", img, txt).amax(dim=-1)  # [I, T]: best query per pair
        for k in (1, 5):
            top_t = sim.topk(min(k, len(texts)), dim=1).indices  # [I, k]
            out[f"image_to_text_R@{k}"] = relevant.gather(1, top_t).any(dim=1).float().mean().item()
            top_i = sim.t().topk(min(k, len(owners)), dim=1).indices  # [T, k]
            out[f"text_to_image_R@{k}"] = relevant.t().gather(1, top_i).any(dim=1).float().mean().item()
        v = torch.cat(feats)  # [I, L, C]
        positive = torch.tensor([index[caps[0]] for caps in owners], device=device)  # [I]
        negative = sim.masked_fill(relevant, float("-inf")).argmax(dim=1)  # [I]: the most similar other caption
        hits = 0
        for rows, label in ((positive, 1), (negative, 0)):
            for i in range(0, len(owners), 128):
                ids, mask = self.encode_text([texts[j] for j in rows[i : i + 128].tolist()], device)
                logits = self.itm_logits(v[i : i + 128], ids, mask)  # [n, 2]
                hits += int((logits.argmax(dim=1) == label).sum())
        out["itm_accuracy"] = hits / (2 * len(owners))
        out["itg_token_accuracy"] = correct_tokens / max(tokens, 1)
        out["images"], out["texts"] = float(len(owners)), float(len(texts))
        return out

    # ------------------------------------------------------------------ saving
    def saved_config(self) -> dict[str, Any]:
        """``config.json``: the Semantic-CC fields that load this Q-Former, and where its inputs came from."""
        qformer = {k: v for k, v in self.config.qformer.items() if k != "use_qformer_text_input"}
        qformer["encoder_hidden_size"] = self.vision_width
        return {
            "format": FORMAT_TAG,
            "qformer": qformer,  # model.caption.qformer
            "num_query_tokens": self.config.num_query_tokens,  # model.caption.num_query_tokens
            "vision_width": self.vision_width,  # model.neck.cc_dim
            "features": self.config.features,
            "sam": self.config.sam,
            "image_size": self.image_size,
            "tokenizer": self.config.tokenizer,
        }

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors a BLIP-2 checkpoint holds for the Q-Former, under its names (``load_blip2_qformer``):
        ``qformer.*`` (the query branch; the text branch is pretraining-only), ``query_tokens`` and
        ``vision_model.post_layernorm.*`` (``ln_vision``)."""
        from transformers import Blip2QFormerModel

        cfg = copy.deepcopy(self.qformer.config)
        cfg.use_qformer_text_input = False
        with torch.device("meta"):
            keys = Blip2QFormerModel(cfg).state_dict().keys()
        state = self.qformer.state_dict()
        out = {f"qformer.{k}": state[k] for k in keys}
        out["query_tokens"] = self.query_tokens
        out["vision_model.post_layernorm.weight"] = self.ln_vision.weight
        out["vision_model.post_layernorm.bias"] = self.ln_vision.bias
        return {k: t.detach().cpu().contiguous().clone() for k, t in out.items()}

    def save_pretrained(self, out_dir: Path) -> None:
        """Write ``model.safetensors`` (:meth:`saved_state_dict`) and ``config.json`` (:meth:`saved_config`)."""
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            save_file(self.saved_state_dict(), str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_TAG})
            (tmp / CONFIG_FILE).write_text(json.dumps(self.saved_config(), indent=2) + "\n", encoding="utf-8")

        write_folder(out_dir, write)


def load_tokenizer(name_or_dir: str) -> Any:
    """A transformers tokenizer (``AutoTokenizer``); one-line error when it cannot be read."""
    from transformers import AutoTokenizer

    local = Path(name_or_dir).expanduser()
    if str(name_or_dir).startswith(("/", ".", "~")) and not local.is_dir():
        raise ModelError(f"model.tokenizer '{name_or_dir}': no such directory")
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.is_dir() else str(name_or_dir))
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"model.tokenizer '{name_or_dir}': not a transformers tokenizer, or not available offline "
                         f"({first_line(e)})") from None  # fmt: skip


def build_qformer(config: QFormerPretrainConfig, inputs: PretrainInputs) -> QFormerPretrainer:
    """A Q-Former over the frozen SAM ``model.sam`` at the data's image size, with the tokenizer ``model.tokenizer``
    (``inputs.texts`` are not used: the tokenizer is given, e.g. the ``lm`` or ``clip`` stand-in's)."""
    size = config.image_size if config.image_size is not None else inputs.image_size
    if size != inputs.image_size:
        raise ConfigError("model.image_size", f"is {size} but data.image_size is {inputs.image_size}")
    if not inputs.texts:
        raise ConfigError("data.root", "the qformer target needs captions, and the training images have none")
    return QFormerPretrainer(dataclasses.replace(config, image_size=size))


TARGET = PretrainTarget(
    name="qformer",
    summary="a BLIP-2 Q-Former trained with image-text contrast, matching and generation over a frozen SAM",
    config_class=QFormerPretrainConfig,
    build=build_qformer,
    inputs="images",
    needs=("captions",),
    loads_as="model.caption.qformer_pretrained: DIR (Semantic-CC)",
)
