"""``changecap pretrain lm``: a small causal language model and its tokenizer, trained on caption text.

A ``transformers`` causal LM (LLaMA by default, any ``model_type`` transformers knows) of a configured size, from
random initialisation, trained with next-token cross-entropy on the training captions: the single-date captions and,
for a SynthCC root, the change captions of its train pairs. Each caption is taught in the form Semantic-CC's caption
decoder trains and generates it: Semantic-CC's cleaning (lower case, punctuation removed) and its end symbol,
between ``<s>`` and ``</s>``: ``<s>two houses are built by the road###</s>``. With ``data.documents`` a sequence
holds every caption of one image or pair, each closed by the end symbol (``<s>a pond in the middle###a round pond at
the centre###…</s>``): a small LM learns from paraphrases in its context to use that context, which Semantic-CC's
frozen LLM must do to read the visual tokens before its answer (``docs/pretraining.md``). The prompt around it in
Semantic-CC (``###Ask: <Img>…</Img> … ###Answer:``) is not part of pretraining: it is the systems' business, learnt
with them; the tokenizer still learns the default prompt's words, so they are whole tokens rather than bytes.

The written directory (``config.json``, ``model.safetensors``, ``generation_config.json`` and the tokenizer) loads
as Semantic-CC's ``model.caption.llm: DIR`` (``AutoModelForCausalLM`` and ``AutoTokenizer``); the tokenizer has the
``<s>`` the prompt starts with and encodes the end symbol as one token. Held-out evaluation: the mean token loss
and perplexity on the captions of the held-out images and pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ConfigError
from changecap.models.foundations.target import PretrainInputs, PretrainTarget
from changecap.models.foundations.tokenizer import TokenizerConfig, train_tokenizer
from changecap.models.semantic_cc.caption import clean_caption
from changecap.models.semantic_cc.config import SemanticCCCaptionConfig
from changecap.schema import require

#: fields of the LM's transformers config set by the tokenizer, not by the config
TOKENIZER_FIELDS: tuple[str, ...] = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id")


def _llm_defaults() -> dict[str, Any]:
    return {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 256}  # fmt: skip


@dataclass
class LMPretrainConfig:
    """The ``model`` section of ``changecap pretrain lm``.

    ``llm``: the fields of a ``transformers`` config (``model_type`` picks the family; the vocabulary and special
    ids come from the tokenizer). ``end_symbol`` must be the Semantic-CC config's ``caption.end_symbol``;
    ``clean_captions`` applies Semantic-CC's caption cleaning (keep it on for Semantic-CC).
    """

    llm: dict[str, Any] = field(default_factory=_llm_defaults)
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(max_length=64))
    end_symbol: str = "###"
    clean_captions: bool = True

    def validate(self, prefix: str = "model") -> None:
        for key in TOKENIZER_FIELDS:
            require(key not in self.llm, f"{prefix}.llm.{key}", "is set by the tokenizer trained on the captions")
        require(bool(self.end_symbol.strip()), f"{prefix}.end_symbol", "must not be empty")
        positions = self.llm.get("max_position_embeddings", self.tokenizer.max_length)
        require(
            not isinstance(positions, int) or positions >= self.tokenizer.max_length,
            f"{prefix}.llm.max_position_embeddings",
            f"{positions} is below tokenizer.max_length {self.tokenizer.max_length}",
        )
        self.tokenizer.validate(f"{prefix}.tokenizer")
        _check_llm_fields(self.llm, f"{prefix}.llm")


def _check_llm_fields(llm: dict[str, Any], prefix: str) -> None:
    """Every ``llm`` field must be one the family's transformers config reads: transformers keeps a keyword it does
    not know as a plain attribute, so a misspelt field (``hidden_sise``) would leave the default in force silently."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    fields = dict(llm)
    model_type = fields.pop("model_type", "llama")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{prefix}.model_type", f"{model_type!r} is not a model type transformers knows")
    try:
        given = AutoConfig.for_model(model_type, **fields).to_dict()
    except Exception as e:  # noqa: BLE001 - TypeError, ValueError or huggingface_hub's strict-field errors
        raise ConfigError(prefix, f"rejected by transformers: {' '.join(str(e).split())}") from None
    defaults = AutoConfig.for_model(model_type)
    known = set(defaults.to_dict()) | set(getattr(defaults, "attribute_map", {}))
    # a field transformers converts (rope_theta into rope_parameters) is not kept under its own name: known too
    unknown = sorted(k for k in fields if k in given and k not in known)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", f"is not a field of a transformers {model_type} config")


def prompt_texts() -> list[str]:
    """The default Semantic-CC prompt's strings (template, image slot, instructions), for the tokenizer."""
    c = SemanticCCCaptionConfig()
    return [c.prompt_template.format(c.image_placeholder + instruction) for instruction in c.instructions]


def caption_text(caption: str, config: LMPretrainConfig) -> str:
    """A caption as it is taught: cleaned as Semantic-CC cleans it (``clean_captions``) and closed by the end
    symbol."""
    body = clean_caption(caption) if config.clean_captions else " ".join(caption.split())
    return body + config.end_symbol


def _documents(batch: dict[str, Any]) -> list[list[str]]:
    """A batch's documents: ``texts`` (every caption of an image or pair) or ``text`` (one caption each)."""
    if "texts" in batch:
        return [list(texts) for texts in batch["texts"]]
    return [[text] for text in batch["text"]]


class CausalLMPretrainer(nn.Module):
    """The pretraining module (contract in ``target.py``) around a causal LM and its tokenizer."""

    def __init__(self, llm: nn.Module, tokenizer: Any, config: LMPretrainConfig) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = config

    def encode(self, documents: list[list[str]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``<s> caption###caption###… </s>`` ids [B, T] (one document of captions per row; right-padded, truncated to
        ``tokenizer.max_length`` keeping ``</s>``) and the attention mask [B, T]."""
        enc = self.tokenizer(
            ["".join(caption_text(c, self.config) for c in captions) for captions in documents],
            padding=True,
            truncation=True,
            max_length=self.config.tokenizer.max_length,
            return_tensors="pt",
        )
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def token_losses(self, documents: list[list[str]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of next-token cross-entropies over the real tokens after ``<s>``, and their count."""
        ids, mask = self.encode(documents, device)
        logits = self.llm(input_ids=ids, attention_mask=mask).logits[:, :-1]  # [B, T-1, V]: position t predicts t+1
        target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # [B, T-1]
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                             reduction="sum")  # fmt: skip
        return ce, (target != -100).sum()

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = next(self.llm.parameters()).device
        total, count = self.token_losses(_documents(batch), device)
        return {"lm": total / count.clamp(min=1)}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Mean token loss and perplexity on the held-out captions."""
        device = next(self.llm.parameters()).device
        total, count = 0.0, 0
        for batch in batches:
            ce, n = self.token_losses(_documents(batch), device)
            total, count = total + float(ce), count + int(n)
        if count == 0:
            return {}
        loss = total / count
        return {"captions_tokens": float(count), "loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def save_pretrained(self, out_dir: Path) -> None:
        self.llm.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


def build_lm(config: LMPretrainConfig, inputs: PretrainInputs) -> CausalLMPretrainer:
    """A randomly initialised causal LM with a tokenizer trained on the captions (and the default prompt)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not inputs.texts:
        raise ConfigError("data.root", "the lm target needs caption text, and the training data have none")
    texts = [caption_text(t, config) for t in inputs.texts] + prompt_texts()
    tokenizer = train_tokenizer(texts, config.tokenizer, added_tokens=[config.end_symbol])
    fields = dict(config.llm)
    model_type = fields.pop("model_type", "llama")
    try:
        llm_config = AutoConfig.for_model(
            model_type,
            **fields,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    except Exception as e:  # noqa: BLE001 - TypeError, ValueError or huggingface_hub's strict-field errors
        raise ConfigError("model.llm", f"rejected by transformers: {' '.join(str(e).split())}") from None
    llm_config._attn_implementation = "sdpa"
    try:
        llm = AutoModelForCausalLM.from_config(llm_config)
    except ValueError as e:  # a config family without a causal LM head
        raise ConfigError("model.llm.model_type", f"{model_type!r}: {' '.join(str(e).split())}") from None
    return CausalLMPretrainer(llm, tokenizer, config)


TARGET = PretrainTarget(
    name="lm",
    summary="a small causal language model and its tokenizer, trained on caption text",
    config_class=LMPretrainConfig,
    build=build_lm,
    inputs="text",
    needs=("captions",),
    loads_as="model.caption.llm: DIR (Semantic-CC)",
)
