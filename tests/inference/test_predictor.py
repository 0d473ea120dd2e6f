"""ChangeCaptioner: every input kind (paths, PIL, numpy, tensors; single and batched) gives the same captions as the
model on the same preprocessed tensor, and bad inputs end in one-line errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from changecap.cli.main import main
from changecap.data.image_io import read_rgb
from changecap.data.vocab import Vocabulary
from changecap.errors import ChangeCapError, DataError, ModelError
from changecap.inference import CaptionResult, ChangeCaptioner, PreprocessConfig, preprocess_pair
from changecap.models import load_model
from changecap.models.contract import Decoding, RawPrediction
from tests.data.fakes import bomb_png, save_with_orientation
from tests.inference.conftest import IMAGE_SIZE
from tests.inference.malformed_models import CASES as MODEL_CASES
from tests.inference.malformed_models import Case, make_model_dir


def _pair_paths(root: Path, split: str = "test", i: int = 0) -> tuple[Path, Path]:
    name = f"{split}_{i + 1:06d}.png"
    return root / "images" / split / "A" / name, root / "images" / split / "B" / name


@pytest.fixture(scope="module")
def captioner(model_dir: Path) -> ChangeCaptioner:
    return ChangeCaptioner.from_pretrained(model_dir, device="cpu")


def test_single_pair_from_paths_matches_the_model(captioner: ChangeCaptioner, model_dir: Path, data_root: Path) -> None:
    before, after = _pair_paths(data_root)
    res = captioner(before, after)
    assert isinstance(res, CaptionResult)
    # The same pair through the model directly, preprocessed by hand.
    model = load_model(model_dir)
    image = preprocess_pair(read_rgb(before), read_rgb(after), captioner.preprocess)[None]  # [1, 2, 3, S, S]
    assert image.shape == (1, 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    seqs, prob = model.caption(image, max_length=captioner.max_length)
    assert res.tokens == seqs[0]
    assert res.caption == captioner.vocab.decode(seqs[0])
    assert prob is not None and res.change_probability == pytest.approx(float(prob[0]))
    assert 0.0 <= res.change_probability <= 1.0
    assert res.tokens[0] == 2  # <START>
    assert len(res.tokens) <= captioner.max_length + 1  # <START> + at most max_length decoded ids


def test_every_input_kind_gives_the_same_caption(captioner: ChangeCaptioner, data_root: Path) -> None:
    before, after = _pair_paths(data_root)
    ref = captioner(before, after)
    b, a = read_rgb(before), read_rgb(after)  # uint8 [H, W, 3]
    variants = {
        "str": (str(before), str(after)),
        "pil": (Image.open(before), Image.open(after)),
        "uint8 array": (b, a),
        "float array": (b.astype(np.float32) / 255.0, a.astype(np.float32) / 255.0),
        "uint8 tensor": (torch.from_numpy(b).permute(2, 0, 1), torch.from_numpy(a).permute(2, 0, 1)),
        "float tensor": (torch.from_numpy(b).permute(2, 0, 1) / 255.0, torch.from_numpy(a).permute(2, 0, 1) / 255.0),
        "palette-free RGBA→RGB PIL": (Image.open(before).convert("RGB"), Image.open(after).convert("RGB")),
    }
    for kind, (x, y) in variants.items():
        out = captioner(x, y)
        assert isinstance(out, CaptionResult), kind
        assert out.tokens == ref.tokens, kind
        assert out.change_probability == pytest.approx(ref.change_probability, abs=1e-6), kind


def test_batches_match_single_pairs(captioner: ChangeCaptioner, data_root: Path) -> None:
    pairs = [_pair_paths(data_root, "test", i) for i in range(4)]
    singles = [captioner(b, a) for b, a in pairs]
    for batch_size in (1, 3, 16):
        batched = captioner([b for b, _ in pairs], [a for _, a in pairs], batch_size=batch_size)
        assert isinstance(batched, list) and len(batched) == 4
        assert [r.tokens for r in batched] == [r.tokens for r in singles], batch_size
    arrays_b = np.stack([read_rgb(b) for b, _ in pairs])  # [N, H, W, 3]
    arrays_a = np.stack([read_rgb(a) for _, a in pairs])
    assert [r.tokens for r in captioner(arrays_b, arrays_a)] == [r.tokens for r in singles]
    tensors_b = torch.from_numpy(arrays_b).permute(0, 3, 1, 2)  # [N, 3, H, W]
    tensors_a = torch.from_numpy(arrays_a).permute(0, 3, 1, 2)
    assert [r.tokens for r in captioner(tensors_b, tensors_a)] == [r.tokens for r in singles]


def test_beam_search_and_max_length(captioner: ChangeCaptioner, data_root: Path) -> None:
    before, after = _pair_paths(data_root)
    beam = captioner(before, after, beam_size=3)
    assert beam.tokens[0] == 2 and len(beam.tokens) <= captioner.max_length + 1
    short = captioner(before, after, max_length=3)
    assert len(short.tokens) <= 4 and short.tokens[:4] == captioner(before, after).tokens[:4]


def test_plain_model_has_no_change_probability(plain_model_dir: Path, data_root: Path) -> None:
    captioner = ChangeCaptioner.from_pretrained(plain_model_dir, device="cpu")
    res = captioner(*_pair_paths(data_root))
    assert res.change_probability is None and res.tokens[0] == 2


def test_preprocess_config_is_read_from_the_model_dir(captioner: ChangeCaptioner) -> None:
    assert captioner.preprocess == PreprocessConfig(image_size=IMAGE_SIZE, resize_mode="resize")


def test_missing_preprocess_json_falls_back_to_clip_rule_at_encoder_size(model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(model_dir, tmp_path / "m")
    (copy / "preprocess.json").unlink()
    captioner = ChangeCaptioner.from_pretrained(copy, device="cpu")
    assert captioner.preprocess.image_size == IMAGE_SIZE and captioner.preprocess.resize_mode == "clip"


def _one_line(exc: pytest.ExceptionInfo[BaseException], *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize(
    ("before", "after", "words"),
    [
        (np.zeros((32, 32, 3), np.uint8), np.zeros((40, 32, 3), np.uint8), ("same size", "32×32", "32×40")),
        (np.zeros((32, 32), np.uint8), np.zeros((32, 32, 3), np.uint8), ("single-band", "before")),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 4), np.uint8), ("4 bands", "after")),
        (torch.zeros(4, 32, 32), torch.zeros(3, 32, 32), ("4 band(s)", "before")),
        (torch.zeros(32, 32), torch.zeros(3, 32, 32), ("[3, H, W]",)),
        (Image.new("L", (32, 32)), Image.new("RGB", (32, 32)), ("1 band(s)", "before")),
        (Image.new("RGBA", (32, 32)), Image.new("RGB", (32, 32)), ("4 band(s)", "before")),
        (np.full((32, 32, 3), 2.0, np.float32), np.zeros((32, 32, 3), np.float32), ("[0, 1]",)),
        ("nope.png", np.zeros((32, 32, 3), np.uint8), ("nope.png",)),
        (3, 4, ("unsupported image type",)),
    ],
)
def test_bad_images_are_one_line_errors(captioner: ChangeCaptioner, before: object, after: object, words) -> None:
    with pytest.raises(DataError) as exc:
        captioner(before, after)  # type: ignore[arg-type]
    _one_line(exc, *words)


def test_grayscale_and_4_band_files_are_refused(captioner: ChangeCaptioner, tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (32, 32)).save(rgb)
    for mode in ("L", "RGBA"):
        path = tmp_path / f"{mode}.png"
        Image.new(mode, (32, 32)).save(path)
        with pytest.raises(DataError) as exc:
            captioner(path, rgb)
        _one_line(exc, str(path))


def test_a_decompression_bomb_is_a_data_error(
    captioner: ChangeCaptioner, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError) as exc:
        captioner(tmp_path / "rgb.png", bomb)
    _one_line(exc, str(bomb))
    code = main(["caption", str(tmp_path / "rgb.png"), str(bomb), "--model", str(model_dir), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {bomb}: image is 30000×30000 pixels") and "\n" not in err


def test_exif_orientation_is_applied_to_files_and_pil_images(captioner: ChangeCaptioner, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    turned = save_with_orientation(stored, tmp_path / "turned.png", 6)
    upright = np.ascontiguousarray(np.rot90(stored, -1))  # [48, 32, 3]: as a viewer shows the file
    expected = captioner(upright, upright).tokens
    assert captioner(turned, turned).tokens == expected
    with Image.open(turned) as img:
        assert captioner(img, img).tokens == expected


def test_batch_length_mismatch_and_index_in_messages(captioner: ChangeCaptioner) -> None:
    ok = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(DataError) as exc:
        captioner([ok, ok], [ok])
    _one_line(exc, "same length")
    with pytest.raises(DataError) as exc:
        captioner([ok, ok], [ok, np.zeros((16, 16, 3), np.uint8)])
    _one_line(exc, "before[1]", "after[1]")


def test_missing_or_broken_model_files_are_one_line_errors(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(tmp_path / "nowhere", device="cpu")
    _one_line(exc, "nowhere", "not found")
    for name, words in (
        ("model.safetensors", ("model.safetensors", "missing")),
        ("vocab.json", ("vocab.json", "missing")),
        ("config.json", ("config.json", "missing")),
    ):
        copy = shutil.copytree(model_dir, tmp_path / f"no_{name}")
        (copy / name).unlink()
        with pytest.raises(ChangeCapError) as exc:
            ChangeCaptioner.from_pretrained(copy, device="cpu")
        _one_line(exc, *words)
    broken = shutil.copytree(model_dir, tmp_path / "broken_pp")
    (broken / "preprocess.json").write_text("{not json")
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(broken, device="cpu")
    _one_line(exc, "preprocess.json", "not valid JSON")


def test_vocabulary_that_does_not_match_the_checkpoint(model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(model_dir, tmp_path / "m")
    words = json.loads((copy / "vocab.json").read_text())
    words["zzzextra"] = len(words)
    (copy / "vocab.json").write_text(json.dumps(words))
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(copy, device="cpu")
    _one_line(exc, "vocab.json", str(len(words)))


def test_bf16_precision_casts_once_and_equals_autocast(model_dir: Path, scc_dir: Path, data_root: Path) -> None:
    before, after = _pair_paths(data_root)
    for folder in (model_dir, scc_dir):
        reference = ChangeCaptioner.from_pretrained(folder, device="cpu")
        bf16 = ChangeCaptioner.from_pretrained(folder, device="cpu", precision="bf16")
        assert any(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
        pairs = torch.stack([preprocess_pair(read_rgb(before), read_rgb(after), reference.preprocess)] * 2)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # what bf16 autocast alone gives, weights re-cast per call
            expected = reference.caption_tensor(pairs)
        got = bf16.caption_tensor(pairs)
        assert [r.caption for r in got] == [r.caption for r in expected]
        assert [r.tokens for r in got] == [r.tokens for r in expected]
        for g, e in zip(got, expected):
            assert g.change_probability == e.change_probability
            assert (g.mask is None and e.mask is None) or np.array_equal(g.mask, e.mask)


def test_unknown_precision_is_an_error(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8"):
        ChangeCaptioner.from_pretrained(model_dir, device="cpu", precision="fp16")


def test_int8_precision_quantises_once_and_keeps_pairs_independent(
    model_dir: Path, scc_dir: Path, data_root: Path
) -> None:
    from changecap.models.precision import Fp32Linear, Int8Linear

    for folder in (model_dir, scc_dir):
        int8 = ChangeCaptioner.from_pretrained(folder, precision="int8")  # no device: int8 defaults to the CPU
        assert int8.device.type == "cpu"
        assert any(isinstance(m, Int8Linear) for m in int8.model.modules())
        assert all(m.weight.dtype == torch.float32 for m in int8.model.modules() if isinstance(m, Fp32Linear))
        pairs = [_pair_paths(data_root, i=i) for i in range(3)]
        batch = int8([b for b, _ in pairs], [a for _, a in pairs])
        # activations are quantised per row: a pair's caption does not depend on the pairs batched with it
        for (before, after), res in zip(pairs, batch, strict=True):
            alone = int8(before, after)
            assert alone.tokens == res.tokens and alone.caption == res.caption
            assert (alone.mask is None and res.mask is None) or np.array_equal(alone.mask, res.mask)


def test_int8_where_it_cannot_run_is_a_one_line_error(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(model_dir, device="cuda", precision="int8")
    _one_line(exc, "CPU only", "cuda")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # a build without oneDNN
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(model_dir, device="cpu", precision="int8")
    _one_line(exc, "int8 kernels", "fp32 or bf16")


def test_compile_falls_back_to_eager_with_one_warning(
    model_dir: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import changecap.models.compiling as compiling

    def broken(fn, **options):  # noqa: ANN001, ANN003, ANN202 - a compiler that fails on first use
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no C++ compiler\nlong details")

        return call

    monkeypatch.setattr(compiling.torch, "compile", broken)
    before, after = _pair_paths(data_root)
    eager = ChangeCaptioner.from_pretrained(model_dir, device="cpu")(before, after)
    compiled = ChangeCaptioner.from_pretrained(model_dir, device="cpu", compile=True)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of the encoder failed \(RuntimeError: no C\+\+ compiler\)"):
        first = compiled(before, after)
    second = compiled(before, after)  # eager from now on: no second warning
    assert first.tokens == second.tokens == eager.tokens


@pytest.mark.slow
def test_compiled_encoder_gives_the_eager_tokens(model_dir: Path, data_root: Path) -> None:
    pytest.importorskip("torch._inductor")
    before, after = _pair_paths(data_root)
    eager = ChangeCaptioner.from_pretrained(model_dir, device="cpu")
    compiled = ChangeCaptioner.from_pretrained(model_dir, device="cpu", compile=True)
    pairs = ([before] * 3, [after] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would hide a broken compile path
        got = compiled(*pairs)
    expected = eager(*pairs)
    assert [r.tokens for r in got] == [r.tokens for r in expected]
    for g, e in zip(got, expected):
        assert g.change_probability == pytest.approx(e.change_probability, abs=1e-5)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("malformed") / "model")


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_damaged_model_directory_is_one_line_error_naming_file_and_field(
    case: Case, tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "m")
    case.damage(copy)
    with pytest.raises(ChangeCapError) as exc:
        ChangeCaptioner.from_pretrained(copy, device="cpu")
    _one_line(exc, str(copy), *case.expect)


def test_non_finite_change_probability_is_an_error_not_a_nan(
    captioner: ChangeCaptioner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NaN that gets past the load-time checks (e.g. an overflow) never reaches a result."""
    real = captioner.model.infer

    def nan_infer(images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        raw = real(images, decoding)
        raw.change_probability = torch.full_like(raw.change_probability, float("nan"))
        return raw

    monkeypatch.setattr(captioner.model, "infer", nan_infer)
    ok = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ModelError) as exc:
        captioner(ok, ok)
    _one_line(exc, "change probability is not finite", "precision fp32")


def test_decoding_options_reach_every_captioning_system(
    captioner: ChangeCaptioner, scc_dir: Path, cd_dir: Path, data_root: Path
) -> None:
    """``beam_size`` and ``max_length`` reach the model through its one entry point, whatever the system (a model
    with a change-detection head included); one a system cannot honour is a one-line error."""
    before, after = _pair_paths(data_root)
    image = preprocess_pair(read_rgb(before), read_rgb(after), captioner.preprocess)[None]  # [1, 2, 3, S, S]
    for beam, steps in ((1, 3), (3, 5)):
        res = captioner(before, after, beam_size=beam, max_length=steps)
        assert res.tokens == captioner.model.caption(image, max_length=steps, beam_size=beam)[0][0]
        assert len(res.tokens) <= steps + 1
    scc = ChangeCaptioner.from_pretrained(scc_dir, device="cpu")
    seen: list[dict] = []
    llm = scc.model.caption_decoder.llm
    generate = llm.generate
    llm.generate = lambda **kw: seen.append(kw) or generate(**kw)  # type: ignore[method-assign]
    res = scc(before, after, beam_size=2, max_length=3)
    assert (seen[-1]["num_beams"], seen[-1]["max_new_tokens"]) == (2, 3) and res.mask is not None
    cd = ChangeCaptioner.from_pretrained(cd_dir, device="cpu")
    with pytest.raises(ModelError) as exc:
        cd(before, after, beam_size=2)
    _one_line(exc, "change_detection writes no captions", "beam search")
    with pytest.raises(ModelError) as exc:
        captioner(before, after, beam_size=0)
    _one_line(exc, "beam_size must be >= 1")


def test_the_captioner_reads_the_declared_capabilities(captioner: ChangeCaptioner, cd_dir: Path) -> None:
    assert captioner.architecture == "hisem"
    assert captioner.capabilities.names() == ["captions", "change_probability", "beam_search", "onnx", "attention_maps"]
    cd = ChangeCaptioner.from_pretrained(cd_dir, device="cpu")
    assert cd.capabilities.names() == ["change_mask"]


def test_a_model_that_cannot_read_images_is_refused(vocab: Vocabulary) -> None:
    from changecap.models import build_model
    from changecap.models.hisem import tiny_config

    model = build_model(tiny_config(len(vocab), image_size=32, patch_size=8, dim=32, encoder=False))
    assert model.image_size is None  # it runs from backbone tokens only
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner(model, vocab, PreprocessConfig(image_size=32))
    _one_line(exc, "hisem model cannot read images")


def test_attention_maps_are_word_grids_over_the_box_the_model_read(
    captioner: ChangeCaptioner, model_dir: Path, data_root: Path, scc_dir: Path, tmp_path: Path
) -> None:
    before, after = _pair_paths(data_root)
    res = captioner(before, after, attention_maps=True)
    assert res.caption == captioner(before, after).caption and captioner(before, after).attention is None
    side = IMAGE_SIZE // 8  # the 8 px patches' grid
    assert res.attention is not None and res.attention.shape == (len(res.words()), side, side)
    assert res.attention.dtype == np.float32 and np.allclose(res.attention.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert res.attention_box == (0, 0, 40, 40)  # a resized 40 px image: the grid covers all of it
    # a clip resize keeps the centred square of the shorter side, which is what the grid covers
    copy = shutil.copytree(model_dir, tmp_path / "m")
    PreprocessConfig(image_size=IMAGE_SIZE, resize_mode="clip").save(copy)
    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    clipped = ChangeCaptioner.from_pretrained(copy, device="cpu")([wide], [wide], attention_maps=True)[0]
    assert clipped.attention_box == (30, 0, 70, 40)
    with pytest.raises(ModelError) as exc:
        ChangeCaptioner.from_pretrained(scc_dir, device="cpu")(before, after, attention_maps=True)
    _one_line(exc, "semantic_cc gives no attention maps")
