"""``changecap convert hisem-official``: end-to-end on a tiny synthetic official checkpoint, and its user errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.cli.main import main
from changecap.convert.official_layout import OfficialHiSemDims, synthetic_official_checkpoint
from changecap.convert.openai_clip import synthetic_openai_clip_state_dict
from changecap.data.vocab import Vocabulary

DIMS = OfficialHiSemDims(
    d_model=16, grid_h=2, grid_w=2, bdam_layers=1, modulator_hidden=4, num_experts=4, expert_hidden=8,
    shared_hidden=16, pwff_hidden=8, vocab_size=9, max_length=6, decoder_layers=1, decoder_ff=32,
)  # fmt: skip
OPTS = ["--heads", "2", "--decoder-heads", "2", "--n-group", "2", "--topk-group", "1", "--top-k", "2"]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ckpt = synthetic_official_checkpoint(DIMS, seed=1)
    ckpt["encoder_dict"] = synthetic_openai_clip_state_dict(width=16, layers=1, patch=4, grid=2)
    torch.save(ckpt, tmp_path / "official.pth")
    Vocabulary.build([[f"w{i}" for i in range(5)]], threshold=0, rule="ge").save(tmp_path / "vocab.json")
    Vocabulary.build([[f"w{i}" for i in range(6)]], threshold=0, rule="ge").save(tmp_path / "vocab10.json")
    return {"ckpt": tmp_path / "official.pth", "vocab": tmp_path / "vocab.json", "vocab10": tmp_path / "vocab10.json"}


def test_convert_with_and_without_encoder(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    import changecap

    out = tmp_path / "model"
    args = ["convert", "hisem-official", str(files["ckpt"]), str(out), "--vocab", str(files["vocab"])]
    assert main([*args, *OPTS, "--clip-heads", "2"]) == 0
    assert str(out) in capsys.readouterr().out
    model = changecap.load_model(out)
    assert model.encoder is not None and model.encoder.grid_size == 2
    image = torch.randn(1, 2, 3, 8, 8)
    with torch.no_grad():
        assert model(image, torch.tensor([[2, 4, 3]])).logits.shape == (1, 3, 9)
    # an existing model is not overwritten without --force
    assert main([*args, *OPTS, "--clip-heads", "2"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args, *OPTS, "--no-encoder", "--force", "--keep-unused"]) == 0
    bare = changecap.load_model(out)
    assert bare.encoder is None and bare.decoder.config.official_unused_params
    f = torch.randn(2, 4, 16)
    with torch.no_grad():
        memory, router_logits = bare.fusion(f, f.flip(0), route=None)
        assert memory.shape == (2, 4, 16) and router_logits.shape == (2, 2)
        assert bare.decoder(memory, torch.tensor([[2, 4, 3], [2, 5, 3]])).shape == (2, 3, 9)
        seqs = bare.generate(memory, max_length=DIMS.max_length, beam_size=1)
    assert len(seqs) == 2 and all(s[0] == 2 and len(s) <= DIMS.max_length + 1 for s in seqs)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("vocab", ["vocab10.json", "10", "9"]),
        ("missing", ["moe.pwff.fc2.bias", "missing official key"]),
        ("shape", ["wdc.weight", "expected [9, 16], found [9, 15]"]),
        ("heads", ["heads", "must divide the width 16"]),
    ],
)
def test_user_errors_exit_2_with_one_line(
    files: dict[str, Path], tmp_path: Path, capsys, change: str, expected: list[str]
) -> None:
    vocab = files["vocab10"] if change == "vocab" else files["vocab"]
    ckpt_path, opts = files["ckpt"], list(OPTS)
    if change in ("missing", "shape"):
        ckpt = torch.load(ckpt_path, weights_only=True)
        if change == "missing":
            del ckpt["encoder_trans_dict"]["moe.pwff.fc2.bias"]
        else:
            ckpt["decoder_dict"]["wdc.weight"] = torch.zeros(9, 15)
        ckpt_path = tmp_path / "broken.pth"
        torch.save(ckpt, ckpt_path)
    if change == "heads":
        opts[1] = "3"
    argv = ["convert", "hisem-official", str(ckpt_path), str(tmp_path / "m"), "--vocab", str(vocab), "--no-encoder"]
    assert main([*argv, *opts]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert all(e in err for e in expected), err
    assert not (tmp_path / "m").exists()


def test_convert_without_format_prints_help(capsys) -> None:
    assert main(["convert"]) == 1
    assert "hisem-official" in capsys.readouterr().out
