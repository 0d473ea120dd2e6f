"""A pretrained LLM (here a tiny one saved to a local directory, with its own tokenizer) is referenced by the model
directory, not copied: only its LoRA tensors are saved, and load_model reloads the rest from the source. With
``caption.bundle_llm`` the directory holds a copy of the LLM instead and loads it from there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, ModelError
from changecap.models import build_model, config_from_dict, load_model, save_model
from tests.models.semantic_cc.conftest import WORDS, tiny


def _pretrained_llm(folder: Path) -> Path:
    """A tiny LLaMA and a word-level fast tokenizer, saved as ``from_pretrained`` expects them."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = specials + sorted(set(WORDS) | {"###", "ask", "answer", ":", "<", ">", "img", "/", "describe", "the"})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")  # fmt: skip
    fast.save_pretrained(folder)
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_the_llm_is_referenced_not_copied(tmp_path: Path) -> None:
    llm_dir = _pretrained_llm(tmp_path / "llm")
    d = tiny(**{"caption.llm": str(llm_dir)})
    d["caption"].pop("llm_config")
    torch.manual_seed(0)
    model = build_model(config_from_dict(d)).eval()
    assert model.config.references_pretrained()
    vocab = Vocabulary.build([WORDS], threshold=0)
    model.config.vocab_size = len(vocab)
    model.vocab = vocab
    out = save_model(model, None, vocab, tmp_path / "model")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    llm_keys = [k for k in keys if k.startswith("caption_decoder.llm.")]
    assert llm_keys and all("lora_" in k for k in llm_keys)  # the adapters only
    assert json.loads((out / "config.json").read_text())["model"]["caption"]["llm"] == str(llm_dir)
    again = load_model(out)
    images = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = model.predict(images), again.predict(images)
    assert a.texts == b.texts and torch.equal(a.mask, b.mask)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    shutil.rmtree(llm_dir)
    with pytest.raises(ModelError, match="model.caption.llm") as e:
        load_model(out)
    assert "\n" not in str(e.value)


def test_a_bundled_llm_is_copied_into_the_model_directory_and_loaded_from_there(tmp_path: Path) -> None:
    llm_dir = _pretrained_llm(tmp_path / "llm")
    d = tiny(**{"caption.llm": str(llm_dir), "caption.bundle_llm": True})
    d["caption"].pop("llm_config")
    torch.manual_seed(0)
    model = build_model(config_from_dict(d)).eval()
    vocab = Vocabulary.build([WORDS], threshold=0)
    model.config.vocab_size = len(vocab)
    model.vocab = vocab
    out = save_model(model, None, vocab, tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (out / "llm").iterdir()}
    shutil.rmtree(llm_dir)  # the source is gone: the model needs only its own directory
    again = load_model(out)
    assert again.config.caption.llm == str(out / "llm")
    images = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = model.predict(images), again.predict(images)
    assert a.texts == b.texts and a.mask is not None and b.mask is not None and torch.equal(a.mask, b.mask)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    save_model(again, None, vocab, out)  # saved again over itself: the copy is replaced by a copy of itself
    assert load_model(out).config.caption.llm == str(out / "llm")
    with pytest.raises(ConfigError, match="model.caption.bundle_llm"):
        config_from_dict(tiny(**{"caption.bundle_llm": True}))  # nothing to copy: a random-init LLM


def test_gguf_files_are_read_from_their_folder(tmp_path: Path) -> None:
    from changecap.models.semantic_cc.caption import pretrained_source

    gguf = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF")
    assert pretrained_source(str(gguf), "model.caption.llm") == (str(tmp_path), {"gguf_file": gguf.name})
    assert pretrained_source("lmsys/vicuna-7b-v1.5", "model.caption.llm") == ("lmsys/vicuna-7b-v1.5", {})
    with pytest.raises(ModelError, match=r"model.caption.llm '.*missing.gguf': no such GGUF file"):
        pretrained_source(str(tmp_path / "missing.gguf"), "model.caption.llm")
