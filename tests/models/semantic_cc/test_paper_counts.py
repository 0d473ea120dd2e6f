"""``configs/semantic_cc_levircc.yaml`` summarised offline on the meta device reproduces the released code's counts."""

from __future__ import annotations

from pathlib import Path

from changecap.engine import load_config
from changecap.engine.model_setup import with_data_sizes
from changecap.models import config_from_dict
from changecap.models.summary import summarize

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "semantic_cc_levircc.yaml"


def test_paper_config_counts_match_the_spec() -> None:
    cfg = load_config(CONFIG, check_model=False)
    s = summarize(config_from_dict(with_data_sizes(cfg.model, 501, 41)))
    counts = {name: c.total for name, c in s.parts.items()}
    assert counts["encoder.sam"] == 304_296_960  # SAM ViT-L @256 with its channel-reduction neck
    assert counts["encoder.lora"] == 1_572_864  # r 16 on 24 qkv
    assert counts["encoder.bcsf"] == 25_202_700  # paper form, 4 blocks
    assert counts["neck"] == 334_506_368  # N = 3, with the 1024 → 1408 projection
    assert counts["cd_decoder.fpn"] == 3_904_640
    # the code's 2-class head has 658,946; the paper's BCE has one output channel: 257 fewer
    assert counts["cd_decoder.head"] == 658_946 - 257
    assert counts["caption_decoder.enhancer"] == 9_444_354  # paper form
    assert counts["caption_decoder.llm.lora"] == 12_582_912  # r 16 on q/k/v of 32 layers
    assert 6.7e9 < counts["caption_decoder.llm"] < 6.8e9  # Vicuna-7B, frozen
    assert s.parts["encoder.sam"].trainable == 0 and s.parts["caption_decoder.llm"].trainable == 0
    assert s.parts["caption_decoder.qformer"].trainable == 0
