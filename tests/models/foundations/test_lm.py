"""The lm target: a small causal LM with its tokenizer, loadable as Semantic-CC's ``model.caption.llm``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError
from changecap.models import build_model, config_from_dict
from changecap.models.foundations.lm import TARGET, CausalLMPretrainer, caption_text
from changecap.models.semantic_cc.caption import HFTokenizer
from tests.models.foundations.tiny_targets import CAPTIONS, TINY_LM, inputs
from tests.models.semantic_cc.conftest import tiny


def _module(seed: int = 0, **changes: object) -> CausalLMPretrainer:
    torch.manual_seed(seed)
    return TARGET.build(TARGET.read_config({**TINY_LM, **changes}), inputs())


def test_captions_are_taught_as_semantic_cc_cleans_and_ends_them() -> None:
    module = _module()
    assert caption_text(" Two houses, at the lower-left .", module.config) == "two houses at the lowerleft###"
    ids, mask = module.encode([["the scene is the same as before ."]], torch.device("cpu"))
    tok = module.tokenizer
    body = tok(caption_text("the scene is the same as before .", module.config), add_special_tokens=False)
    assert ids[0].tolist() == [tok.bos_token_id, *body["input_ids"], tok.eos_token_id]
    assert mask.all()


def test_a_document_is_its_captions_each_closed_by_the_end_symbol() -> None:
    module = _module()
    ids, _ = module.encode([["a pond .", "Two houses"]], torch.device("cpu"))
    tok = module.tokenizer
    body = tok("a pond###two houses###", add_special_tokens=False)["input_ids"]
    assert ids[0].tolist() == [tok.bos_token_id, *body, tok.eos_token_id]
    one_each = module.token_losses([["a pond ."], ["two houses"]], torch.device("cpu"))[1]
    together = module.token_losses([["a pond .", "two houses"]], torch.device("cpu"))[1]
    assert int(together) == int(one_each) - 1  # one </s> fewer, every caption token still a target
    text_batch, document_batch = {"text": ["a pond ."]}, {"texts": [["a pond ."]]}
    torch.testing.assert_close(module(text_batch)["lm"], module(document_batch)["lm"])


def test_a_few_updates_lower_the_loss() -> None:
    module = _module()
    batch = {"text": list(CAPTIONS)}
    opt = torch.optim.AdamW(module.parameters(), lr=1e-2)
    first = module(batch)["lm"].item()
    for _ in range(20):
        opt.zero_grad()
        module(batch)["lm"].backward()
        opt.step()
    assert module(batch)["lm"].item() < 0.5 * first
    out = module.evaluate([{"text": list(CAPTIONS[:2])}, {"text": list(CAPTIONS[2:])}])
    assert out["perplexity"] == pytest.approx(torch.tensor(out["loss"]).exp().item(), rel=1e-5)


def test_saved_directory_loads_as_the_semantic_cc_llm_and_generates(tmp_path: Path) -> None:
    module = _module()
    module.save_pretrained(tmp_path / "lm")
    d = tiny(**{"caption.llm": str(tmp_path / "lm")})
    d["caption"].pop("llm_config")
    torch.manual_seed(0)
    model = build_model(config_from_dict(d)).eval()
    decoder = model.caption_decoder
    assert isinstance(decoder.tokenizer, HFTokenizer)
    for key, value in module.llm.state_dict().items():  # the pretrained weights, under the LoRA wrappers
        loaded = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in decoder.llm.state_dict().items()}  # fmt: skip
        assert torch.equal(loaded[key], value), key
    # the prompt starts with <s>; the end symbol is one token, the last of every target
    head, _ = decoder._prompt_ids(0)
    assert head[0] == module.tokenizer.bos_token_id == decoder.tokenizer.bos_token_id
    assert decoder.tokenizer.encode("###") == [decoder.end_token_id]
    assert decoder.target_ids("Two houses are built .")[-1] == decoder.end_token_id
    images = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.vocab = Vocabulary.build([["two", "houses", "are", "built"]], threshold=0)  # the data's ids for the texts
    captions = model.predict(images).texts
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"llm": {**TINY_LM["llm"], "vocab_size": 10}}, "model.llm.vocab_size"),
        ({"llm": {**TINY_LM["llm"], "max_position_embeddings": 8}}, "model.llm.max_position_embeddings"),
        ({"llm": {**TINY_LM["llm"], "model_type": "no-such-model"}}, "model.llm.model_type"),
        ({"llm": {**TINY_LM["llm"], "hidden_sise": 64}}, "model.llm.hidden_sise"),  # transformers would keep it
        ({"llm": {**TINY_LM["llm"], "hidden_size": "wide"}}, "model.llm"),
        ({"end_symbol": " "}, "model.end_symbol"),
    ],
)
def test_config_errors_name_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        _module(**changes)
    assert e.value.field == field and "\n" not in str(e.value)
