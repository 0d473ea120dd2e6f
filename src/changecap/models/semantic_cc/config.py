"""Configuration of Semantic-CC (``semantic_cc.md``), paper values by default, the released code's as options.

Every difference between the paper and the released code is a named field whose default is the paper's:

* #1 ``encoder.bcsf_placement``: ``"global"`` after the 4 global-attention blocks; code ``"windowed"``;
* #2, #3 ``encoder.bcsf_form``: ``"paper"`` [self ; other] gates and 3 FFNs; code ``"code"`` ([F1 ; F2], shared FFN);
* #4 ``encoder.bcsf_trainable``: ``true``; code ``false`` (frozen as a side effect of its PEFT wrapping);
* #5 ``neck.units``: 3; code 2.  #6 ``neck.cc_heads`` / ``cd_heads``: 16 / 8; code 1408 / 256 (head dimension 1);
  ``neck.ln_eps``: 1e-6; code 0 (the paper gives none);
* #7 ``neck.symmetric_inter``: ``false`` (CC ← CD only, as the code; the mirrored layer is an option);
* #8 ``cd_decoder.loss``: ``"bce"``; code ``"ce"``. ``cd_decoder.form`` defaults to ``"code"`` (5 levels, the released
  code's); the paper's 4-level text is the reconstructed option ``"paper"``;
* #10 ``caption.enhancer``: ``"paper"`` after the Q-Former, scalar gates; code ``"code"`` (4096-d gates, 96 tokens);
* #11 ``caption.llm_lora.enabled``: ``true``; code ``false`` (``freeze_LLM``);
* #12 ``caption.generation.strategy``: ``"greedy"``; code ``"sample"`` (top-p 0.9, repetition penalty 1.1);
* #14 ``encoder.lora.dropout`` / ``.bias``: 0.05 / ``"none"``; code 0.01 / ``"lora_only"``.

Beyond the paper: ``encoder.train_backbone``, ``caption.train_llm`` and ``caption.train_qformer`` train those parts in
full — for randomly initialised ones (CPU runs), where LoRA has nothing pretrained to adapt.

λ (#9) and the schedule (#13) belong to training: ``loss.cd_weight`` and ``loss.schedule`` of the objective.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from changecap.models.registry import ArchitectureConfig
from changecap.schema import require

#: SamVisionConfig fields of SAM ViT-L (``facebook/sam-vit-large``) at Semantic-CC's 256 px input
SAM_VIT_L_256: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "mlp_dim": 4096,
    "output_channels": 256,
    "image_size": 256,
    "patch_size": 16,
    "window_size": 14,
    "global_attn_indexes": [5, 11, 17, 23],
    "layer_norm_eps": 1e-6,
    "qkv_bias": True,
    "use_abs_pos": True,
    "use_rel_pos": True,
}

#: Blip2QFormerConfig fields of the MiniGPT-4 / BLIP-2 Q-Former (BERT-base, cross-attention every 2nd layer)
QFORMER_BASE: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "cross_attention_frequency": 2,
    "encoder_hidden_size": 1408,
}

LLM_FOLDER = "llm"  # where a saved model directory keeps its copy of the LLM (``caption.bundle_llm``)

#: the four instructions of the released config, one drawn per sample in training
INSTRUCTIONS: tuple[str, ...] = (
    "Describe the difference between the new RS images and the old one in detail.",
    "What is the main change between the two RS scenes? Describe it in detail.",
    "Please provide a detailed description of the difference between this two RS pictures.",
    "Could you describe what has been changed between this two RS pictures?",
)


@dataclass
class LoraConfig:
    """LoRA adapters (``peft``) on the named Linear modules; everything else of the wrapped model stays frozen."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    bias: Literal["none", "lora_only", "all"] = "none"  # "lora_only" also trains the adapted layers' biases
    target_modules: list[str] = field(default_factory=lambda: ["qkv"])

    def validate(self, prefix: str = "lora") -> None:
        require(self.r >= 1, f"{prefix}.r", f"must be >= 1, got {self.r}")
        require(self.alpha >= 1, f"{prefix}.alpha", f"must be >= 1, got {self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}")
        require(bool(self.target_modules), f"{prefix}.target_modules", "name at least one module")


@dataclass
class LLMLoraConfig(LoraConfig):
    """LoRA in the LLM (the paper's): the q/k/v projections of every layer."""

    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])


@dataclass
class SAMEncoderConfig:
    """The bi-temporal SAM ViT encoder with change semantic filters."""

    pretrained: str | None = None  # "facebook/sam-vit-large" (or -base / -huge) or a local dir; None: random init
    config: dict[str, Any] = field(default_factory=lambda: dict(SAM_VIT_L_256))  # SamVisionConfig fields
    bcsf_placement: Literal["global", "windowed", "none"] = "global"
    bcsf_form: Literal["paper", "code"] = "paper"
    bcsf_trainable: bool = True
    lora: LoraConfig = field(default_factory=LoraConfig)
    train_backbone: bool = False  # train every SAM weight (a randomly initialised SAM; LoRA adapts pretrained ones)
    gradient_checkpointing: bool = False

    def validate(self, prefix: str = "model.encoder") -> None:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size"):
            value = self.config.get(key)
            require(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{prefix}.config.{key}",
                f"must be a positive integer, got {value!r}",
            )
        require(
            self.config["image_size"] % self.config["patch_size"] == 0,
            f"{prefix}.config.patch_size",
            f"must divide image_size {self.config['image_size']}",
        )
        layers = self.config["num_hidden_layers"]
        for i in self.config.get("global_attn_indexes", []):
            require(0 <= i < layers, f"{prefix}.config.global_attn_indexes", f"block {i} outside 0..{layers - 1}")
        self.lora.validate(f"{prefix}.lora")

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def grid_size(self) -> int:
        return int(self.config["image_size"]) // int(self.config["patch_size"])

    @property
    def cd_width(self) -> int:
        return int(self.config.get("output_channels", 256))

    def bcsf_blocks(self) -> list[int]:
        """Blocks after which a BCSF runs: the global-attention ones (paper) or the windowed ones (code)."""
        layers = int(self.config["num_hidden_layers"])
        window = int(self.config.get("window_size", 14))
        global_blocks = set(self.config.get("global_attn_indexes", []) if window > 0 else range(layers))
        if self.bcsf_placement == "none":
            return []
        if self.bcsf_placement == "global":
            return sorted(global_blocks)
        return [i for i in range(layers) if i not in global_blocks]


@dataclass
class NeckConfig:
    """The multi-task semantic aggregation neck."""

    units: int = 3
    cc_dim: int = 1408  # the visual width the pretrained Q-Former expects
    cc_heads: int = 16
    cd_heads: int = 8
    symmetric_inter: bool = False
    # Not in the paper or the code (both: U = LN(A), no residual): with true, U = LN(X + A). In the code form a
    # near-uniform self-attention (any from-scratch start) gives every token the same output, and the inter-task
    # LayerNorm amplifies that per-image constant until it dominates the CC stream: a random-init CPU run's CC
    # tokens differed by 0.03 of their scale within an image, so the Q-Former could not see where anything changed
    # (docs/semantic_cc.md). Pretrained SAM tokens are large and diverse enough that the code form works there.
    intra_residual: bool = False
    # eps of the units' LayerNorms. The released code's is 0, which divides by zero on a constant token (every value
    # equal, e.g. a saturated sigmoid in the inter-task layer): NaN in the output and the gradients. The default is
    # the usual 1e-6 (also what a model directory whose config lacks the field gets). With 0 the neck computes the
    # code's LayerNorm and gives a constant token the bias instead of NaN (neck.TokenLayerNorm).
    ln_eps: float = 1e-6

    def validate(self, prefix: str = "model.neck") -> None:
        require(self.units >= 1, f"{prefix}.units", f"must be >= 1 (the neck needs a unit), got {self.units}")
        require(self.ln_eps >= 0, f"{prefix}.ln_eps", f"must be >= 0 (0: the released code's), got {self.ln_eps}")
        require(self.cc_dim > 0 and self.cc_dim % self.cc_heads == 0, f"{prefix}.cc_heads", "must divide cc_dim")


@dataclass
class CDDecoderConfig:
    """The change-detection decoder and its pixel loss."""

    # "code" by default: the released code's realisation (5 SimpleFPN levels × 256 channels); the paper's
    # text ("4 levels of 512 channels") is a reconstruction here, selectable as "paper".
    form: Literal["paper", "code"] = "code"
    loss: Literal["bce", "ce"] = "bce"  # bce: one logit per pixel (paper); ce: 2-class softmax (code)
    fpn_dim: int | None = None  # None: 512 (2 × the CD width) in the paper form, 256 in the code form
    # Not in the paper or the code (both: the default init, a 50 % change prior): with a value p the classifier's
    # bias starts at the "change" prior p (RetinaNet's prior init), so a from-scratch run does not spend its first
    # updates learning that change pixels are rare (2.7 % on SynthCC) before the features can learn anything.
    prior_probability: float | None = None

    def validate(self, prefix: str = "model.cd_decoder") -> None:
        p = self.prior_probability
        require(p is None or 0 < p < 1, f"{prefix}.prior_probability", f"must be in (0, 1) or null, got {p}")

    @property
    def num_classes(self) -> int:
        return 1 if self.loss == "bce" else 2


@dataclass
class GenerationConfig:
    """How captions are decoded. Greedy by default, so evaluation is deterministic."""

    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    num_beams: int = 3
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.0  # the code's sampling uses 1.1
    max_new_tokens: int = 64
    seed: int = 0  # sampling: the generator seed, so sampled captions are reproducible


@dataclass
class SemanticCCCaptionConfig:
    """Q-Former + change semantic feature enhancer + prompted causal LM with LoRA."""

    qformer: dict[str, Any] = field(default_factory=lambda: dict(QFORMER_BASE))  # Blip2QFormerConfig fields
    qformer_pretrained: str | None = None  # a BLIP-2 checkpoint id / dir whose Q-Former (and queries) to load
    num_query_tokens: int = 32
    # Average-pool the CC token grid by this factor before the Q-Former (1 = the paper: every token). Not in the
    # paper or the code; the CD side keeps the full grid. Tried for the CPU config's 16×16 grid, where a few changed
    # tokens are diluted in the Q-Former's uniform initial cross-attention: pools of 2 and 4 alone did not make the
    # captions learn (a uniform attention reads the same mean either way; docs/semantic_cc.md), so it stays off.
    visual_pool: int = 1
    enhancer: Literal["paper", "code"] = "paper"
    llm: str | None = None  # an AutoModelForCausalLM id, local dir or local .gguf file (referenced, not copied)
    llm_config: dict[str, Any] | None = None  # or the fields of a random-init config (tests, CPU runs)
    tokenizer: str | None = None  # default: the LLM's own (for ``llm_config``: a word-level tokenizer of the data)
    llm_lora: LLMLoraConfig = field(default_factory=LLMLoraConfig)
    train_llm: bool = False  # train every LLM weight (a randomly initialised LLM; LoRA adapts pretrained ones)
    save_llm_weights: bool = False  # copy the frozen pretrained LLM into model.safetensors (default: reference it)
    # Copy the LLM's local directory (weights, config, tokenizer) into the saved model directory as ``llm/`` and load
    # it from there: the model then needs nothing outside its own directory. For small local LLMs (the ``lm``
    # stand-in, a few MB); a 7B LLM is better referenced.
    bundle_llm: bool = False
    train_qformer: bool = False  # train the Q-Former and its queries (frozen in the paper: MiniGPT-4's weights)
    prompt_template: str = "###Ask: {} ###Answer: "
    image_placeholder: str = "<Img><ImageHere></Img> "
    instructions: list[str] = field(default_factory=lambda: list(INSTRUCTIONS))
    end_symbol: str = "###"
    max_txt_len: int = 120
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def validate(self, prefix: str = "model.caption") -> None:
        require(
            self.llm is not None or self.llm_config is not None,
            f"{prefix}.llm",
            "give 'llm' (a causal LM id or directory) or 'llm_config' (the fields of a random-init config)",
        )
        require(self.num_query_tokens >= 1, f"{prefix}.num_query_tokens", "must be >= 1")
        require(self.visual_pool >= 1, f"{prefix}.visual_pool", "must be >= 1 (1: no pooling)")
        require(bool(self.instructions), f"{prefix}.instructions", "give at least one instruction")
        require(not self.bundle_llm or self.llm is not None, f"{prefix}.bundle_llm", "needs 'llm' (a local directory)")
        require("{}" in self.prompt_template, f"{prefix}.prompt_template", "must contain '{}' (the prompt slot)")
        require("<ImageHere>" in self.image_placeholder, f"{prefix}.image_placeholder", "must contain <ImageHere>")
        self.llm_lora.validate(f"{prefix}.llm_lora")


@dataclass
class SemanticCCConfig(ArchitectureConfig):
    """Semantic-CC: SAM encoder + BCSF → multi-task neck → CD decoder and Q-Former/LLM caption decoder."""

    architecture: ClassVar[str] = "semantic_cc"
    encoder: SAMEncoderConfig = field(default_factory=SAMEncoderConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    cd_decoder: CDDecoderConfig = field(default_factory=CDDecoderConfig)
    caption: SemanticCCCaptionConfig = field(default_factory=SemanticCCCaptionConfig)
    vocab_size: int = 4  # the data vocabulary's size (the rsicc scoring protocol's ids); set by the trainer
    max_length: int = 41  # the data's caption length in tokens (``<START>``/``<END>`` included)

    def validate(self, prefix: str = "model") -> None:
        require(
            self.encoder.grid_size % self.caption.visual_pool == 0,
            f"{prefix}.caption.visual_pool",
            f"{self.caption.visual_pool} does not divide the encoder's {self.encoder.grid_size}×"
            f"{self.encoder.grid_size} token grid",
        )
        require(
            self.caption.qformer.get("encoder_hidden_size", self.neck.cc_dim) == self.neck.cc_dim,
            f"{prefix}.caption.qformer.encoder_hidden_size",
            f"must equal neck.cc_dim = {self.neck.cc_dim} (the Q-Former reads the CC stream)",
        )

    def references_pretrained(self) -> bool:
        """Whether a saved model leaves the frozen pretrained LLM out of its weights (loaded from ``caption.llm``)."""
        c = self.caption
        return c.llm is not None and not c.train_llm and not c.save_llm_weights

    def bundled_folders(self) -> dict[str, str]:
        """Folders a saved model directory holds a copy of: ``{name in the directory: what it is copied from}``
        (``caption.bundle_llm``: the LLM's directory as ``llm``)."""
        c = self.caption
        return {LLM_FOLDER: c.llm} if c.bundle_llm and c.llm is not None else {}

    def with_bundled_folders(self, directory: str | os.PathLike[str]) -> SemanticCCConfig:
        """This config loading what ``directory`` (a saved model) holds a copy of from there: ``caption.llm`` (and
        ``caption.tokenizer`` when it was the LLM's own) becomes ``directory/llm``."""
        folder = Path(directory) / LLM_FOLDER
        c = self.caption
        if not (c.bundle_llm and folder.is_dir()):
            return self
        tokenizer = str(folder) if c.tokenizer in (None, c.llm) else c.tokenizer
        return dataclasses.replace(self, caption=dataclasses.replace(c, llm=str(folder), tokenizer=tokenizer))

    @classmethod
    def with_data(cls, section: dict[str, Any], words: list[str], max_length: int) -> dict[str, Any]:
        """The data's vocabulary size and caption length; a random-init LLM also gets the caption words for its
        word-level tokenizer (recorded in the config, so a saved model rebuilds the same tokenizer offline)."""
        out = {**section, "vocab_size": len(words), "max_length": max(int(section.get("max_length", 0)), max_length)}
        caption = dict(out.get("caption") or {})
        llm_config = caption.get("llm_config")
        if isinstance(llm_config, dict) and caption.get("llm") is None and "tokenizer_words" not in llm_config:
            caption["llm_config"] = {**llm_config, "tokenizer_words": [w for w in words if not w.startswith("<")]}
            out["caption"] = caption
        return out


def tiny_training_config() -> dict[str, Any]:
    """The registry's ``tiny_config``: SAM with 2 blocks at 64 px, 1 neck unit, a 2-layer Q-Former and LLaMA with
    random weights (the LLM's word-level tokenizer is built from the data's vocabulary), 6 new tokens per caption."""
    sam = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 64, "output_channels": 16,
           "image_size": 64, "patch_size": 16, "window_size": 2, "global_attn_indexes": [1]}  # fmt: skip
    qformer = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32,
               "encoder_hidden_size": 24}  # fmt: skip
    llm = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256}  # fmt: skip
    model = {
        "architecture": "semantic_cc",
        "encoder": {"config": sam, "lora": {"r": 2, "alpha": 4}},
        "neck": {"units": 1, "cc_dim": 24, "cc_heads": 2, "cd_heads": 2},
        "cd_decoder": {"fpn_dim": 16},
        "caption": {"qformer": qformer, "num_query_tokens": 4, "llm_config": llm, "llm_lora": {"r": 2, "alpha": 4},
                    "generation": {"max_new_tokens": 6}},
    }  # fmt: skip
    return {"data": {"image_size": 64, "normalize": "imagenet"}, "model": model}
