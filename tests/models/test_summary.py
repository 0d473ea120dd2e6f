"""Parameter summaries built on the meta device: the paper counts, agreement with a real model, tied parameters,
an architecture's own ``summary_parts``, and encoders named only by their pretrained weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from torch import nn

from changecap.errors import ConfigError
from changecap.models import (
    Architecture,
    ArchitectureConfig,
    build_model,
    register_architecture,
    unregister_architecture,
)
from changecap.models.hisem import paper_config, tiny_config
from changecap.models.registry import Capabilities
from changecap.models.summary import ModelSummary, PartCount, count_parameters, summarize

PAPER = {"encoder": 85_799_424, "fusion": 81_243_976, "decoder": 10_221_813}


def test_paper_config_counts_without_weights() -> None:
    s = summarize(paper_config(501, pretrained=None))
    assert s.architecture == "hisem"
    assert {k: s.parts[k].total for k in PAPER} == PAPER
    assert s.total == sum(PAPER.values()) == 177_265_213
    assert s.trainable == 119_818_813
    assert s.parts["fusion"].trainable == PAPER["fusion"] and s.parts["decoder"].trainable == PAPER["decoder"]
    assert 0 < s.parts["encoder"].trainable < PAPER["encoder"]  # only the last 4 CLIP blocks are fine-tuned
    assert {"encoder.vision", "fusion.bdam", "fusion.hasd", "decoder.layers"} <= set(s.parts)
    for part in PAPER:  # HiSem keeps every parameter in a sub-module, so the sub-parts add up to their part
        subs = [c for name, c in s.parts.items() if name.startswith(f"{part}.")]
        assert sum(c.total for c in subs) == s.parts[part].total
        assert sum(c.trainable for c in subs) == s.parts[part].trainable


def test_pretrained_dir_without_config_reads_its_config_json_only(tmp_path: Path) -> None:
    """``encoder.pretrained`` naming a local CLIP directory and no ``encoder.config``: the architecture comes from
    the directory's config.json (no weights there at all)."""
    from transformers import CLIPVisionConfig

    from changecap.models.parts.clip_encoder import VIT_B16_CONFIG

    CLIPVisionConfig(**VIT_B16_CONFIG).save_pretrained(tmp_path / "clip")
    cfg = paper_config(501, pretrained=str(tmp_path / "clip"))
    cfg.encoder.config = None
    s = summarize(cfg)
    assert {k: s.parts[k].total for k in PAPER} == PAPER and s.trainable == 119_818_813
    assert cfg.encoder.config is None  # the caller's config is left alone


def test_pretrained_without_known_architecture_is_a_config_error(tmp_path: Path) -> None:
    for name in ("someone/not-a-cached-clip", str(tmp_path / "no-such-dir")):
        cfg = paper_config(501, pretrained=name)
        cfg.encoder.config = None
        with pytest.raises(ConfigError, match="'model.encoder.config'") as info:
            summarize(cfg)
        assert "\n" not in str(info.value)


def test_pretrained_local_directory_reads_only_its_config(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig

    cfg = tiny_config(20, image_size=32, patch_size=8, dim=32)
    CLIPVisionConfig(**cfg.encoder.config).save_pretrained(tmp_path)  # config.json, no weights
    named = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, pretrained=str(tmp_path), config=None))
    assert summarize(named) == summarize(cfg)


@pytest.mark.parametrize("kw", [{}, {"architecture": "plain"}, {"encoder": False}])
def test_tiny_summary_equals_a_really_built_model(kw: dict[str, Any]) -> None:
    cfg = tiny_config(20, image_size=32, patch_size=8, dim=32, **kw)
    s = summarize(cfg)
    model = build_model(cfg)
    assert not any(p.is_meta for p in model.parameters())
    expected: dict[str, PartCount] = {}
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            expected[name] = count_parameters(child.parameters())
            for sub, grandchild in child.named_children():
                if any(True for _ in grandchild.parameters()):
                    expected[f"{name}.{sub}"] = count_parameters(grandchild.parameters())
    assert s.parts == expected
    assert "encoder" in s.parts if kw.get("encoder", True) else "encoder" not in s.parts
    counts = model.parameter_counts()
    assert (s.total, s.trainable) == (counts["total"], counts["trainable"])
    assert all(s.parts[k].total == counts[k] for k in ("encoder", "fusion", "decoder") if k in s.parts)


# ---------------------------------------------------------------------------------------------------- toy systems
@dataclass
class ToyConfig(ArchitectureConfig):
    """A two-module model with a tied embedding / output matrix and a frozen layer."""

    architecture: ClassVar[str] = "toy_summary"
    vocab: int = 10
    dim: int = 4

    @property
    def vocab_size(self) -> int:
        return self.vocab

    @property
    def max_length(self) -> int:
        return 8

    def validate(self, prefix: str = "model") -> None:
        pass


class Toy(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.body = nn.ModuleDict(
            {"embed": nn.Embedding(config.vocab, config.dim), "frozen": nn.Linear(config.dim, config.dim)}
        )
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        self.head.weight = self.body["embed"].weight  # tied: one tensor in two parts
        self.body["frozen"].requires_grad_(False)
        self.empty = nn.Dropout(0.1)  # no parameters: not a part
        self.config = config


def _build_toy(config: ToyConfig, load_pretrained: bool = True, init_weights: bool = True) -> Toy:
    return Toy(config)


def _toy_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    return {"weights": [p for n, p in model.named_parameters() if n.endswith("weight")], "head": [model.head.weight]}


@pytest.fixture
def toy() -> Iterator[Architecture]:
    spec = Architecture(name="toy_summary", config_class=ToyConfig, build=_build_toy, objective="hisem",
                        capabilities=Capabilities(captions=True))
    register_architecture(spec, replace=True)
    yield spec
    unregister_architecture("toy_summary")


def test_default_parts_count_a_tied_parameter_once_per_part(toy: Architecture) -> None:
    s = summarize(ToyConfig())
    embed, frozen_linear = 10 * 4, 4 * 4 + 4
    assert s == ModelSummary(
        architecture="toy_summary",
        parts={
            "body": PartCount(embed + frozen_linear, embed),
            "body.embed": PartCount(embed, embed),
            "body.frozen": PartCount(frozen_linear, 0),
            "head": PartCount(embed, embed),
        },
        total=embed + frozen_linear,
        trainable=embed,
        capabilities=["captions"],
    )


def test_architecture_summary_parts_are_honoured(toy: Architecture) -> None:
    register_architecture(dataclasses.replace(toy, summary_parts=_toy_parts), replace=True)
    s = summarize(ToyConfig(vocab=6, dim=3))
    assert s.to_dict() == {
        "architecture": "toy_summary",
        "parts": {"weights": {"total": 6 * 3 + 3 * 3, "trainable": 6 * 3}, "head": {"total": 18, "trainable": 18}},
        "total": 6 * 3 + 3 * 3 + 3,
        "trainable": 18,
        "capabilities": ["captions"],
    }


def test_format_table_is_aligned() -> None:
    s = ModelSummary("toy", {"a": PartCount(1234567, 0), "a.b": PartCount(5, 5)}, total=1234567, trainable=0)
    lines = s.format_table().splitlines()
    assert lines[0] == "architecture: toy"
    assert lines[1].split() == ["part", "total", "trainable"]
    assert lines[-1] == "capabilities: none"
    rows = [line for line in lines[2:-1] if not set(line) <= {"-"}]
    assert [r.split() for r in rows] == [["a", "1,234,567", "0"], ["a.b", "5", "5"], ["total", "1,234,567", "0"]]
    assert len({len(r) for r in rows + [lines[1]]}) == 1  # right-aligned numbers: every row has the same width
