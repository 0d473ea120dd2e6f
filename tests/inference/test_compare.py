"""evaluate → compare on two tiny saved models (HiSem and plain), the split's references, the reports, the output
checks, and the sentence encoder behind the embedding similarity (built-in and a tiny sentence-transformers folder,
cached on disk)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from changecap.errors import DataError, ModelError
from changecap.inference import evaluate_model
from changecap.inference.compare import compare_files, split_references, write_json
from changecap.inference.compare_report import comparison_html, write_comparison_html
from changecap.inference.embedding import cache_key, sentence_embedder
from changecap.metrics import evaluate_captions
from tests.data.fakes import make_levir
from tests.models.dfm.conftest import make_sentence_model


@pytest.fixture(scope="module")
def evaluated(model_dir: Path, plain_model_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cache, runs = tmp_path_factory.mktemp("emb"), tmp_path_factory.mktemp("runs")
    out = {}
    for name, model in (("hisem", model_dir), ("plain", plain_model_dir)):
        out[name] = evaluate_model(model, data_root, "levir-mci", "test", out_dir=runs / name / "eval_test",
                                   meteor="off", protocols=("rsicc",), progress=False,
                                   embedding_model="builtin:bag-of-words-16", embedding_cache=cache)  # fmt: skip
    return out


def test_evaluate_writes_predictions_and_the_labelled_embedding_score(evaluated) -> None:
    ev = evaluated["hisem"]
    assert Path(ev.files["predictions"]).name == "predictions_test.json"
    assert json.loads(Path(ev.files["predictions"]).read_text()) == ev.predictions
    metrics = json.loads(Path(ev.files["metrics"]).read_text())
    emb = metrics["rsicc"]["embedding_similarity"]
    assert emb["model"] == "builtin:bag-of-words-16" and 0 <= emb["all"] <= 1 + 1e-9
    assert "Bleu_4" in metrics["rsicc"]["scores"]  # beside the standard metrics
    assert "EmbedSim+" in Path(ev.files["report"]).read_text()


def test_compare_the_two_models_evaluations(evaluated, data_root: Path, tmp_path: Path) -> None:
    files = [evaluated[k].files["predictions"] for k in ("plain", "hisem")]
    c = compare_files(data_root, [(None, f) for f in files], fmt="levir-mci", split="test", resamples=100,
                      permutations=100, embed=sentence_embedder("builtin:bag-of-words-16", tmp_path))  # fmt: skip
    assert [s.label for s in c.systems] == [f"{k}/eval_test/predictions_test" for k in ("plain", "hisem")]
    assert c.n == 4 and c.split == "test"
    for s, k in zip(c.systems, ("plain", "hisem"), strict=True):
        ev = evaluated[k]
        ref = evaluate_captions(ev.predictions, ev.references, protocol="rsicc", meteor="off", breakdown=False)
        assert s.scores["CIDEr"] == pytest.approx(ref.scores["CIDEr"], abs=1e-9)
        assert s.scores["EmbedSim"] == pytest.approx(ev.result.embedding["all"], abs=1e-9)
    d = json.loads(write_json(c, tmp_path / "cmp.json").read_text())
    pair = d["comparisons"][0]
    assert (pair["a"], pair["b"]) == (c.systems[0].label, c.systems[1].label)
    assert {"difference", "ci95", "p_value"} <= set(pair["metrics"]["Bleu_4"])
    html = write_comparison_html(c, tmp_path / "r" / "cmp.html").read_text()
    assert html.count("<svg") == 2 * len(c.metrics)


def test_html_is_self_contained(evaluated, data_root: Path) -> None:
    files = [evaluated[k].files["predictions"] for k in ("plain", "hisem")]
    c = compare_files(data_root, [("plain", files[0]), ("hisem <b>", files[1])], fmt="levir-mci", split="test",
                      resamples=20, permutations=20)  # fmt: skip
    html = comparison_html(c)
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import", html)
    assert "hisem &lt;b&gt;" in html and "hisem <b>" not in html  # labels are escaped
    assert "95 % CI" in html and "stroke-dasharray" in html  # the zero line of the differences


def test_split_references_and_a_missing_split(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "d", "levir-cc", {"train": 2, "val": 0, "test": 2})
    refs = split_references(root, "levir-cc", "test")
    assert sorted(refs) == ["test_000001.png", "test_000002.png"] and all(len(r) == 5 for r in refs.values())
    with pytest.raises(DataError, match=r"\[split\]: the levir-cc dataset has no pairs in split 'val'"):
        split_references(root, "levir-cc", "val")


def test_builtin_embedder_caches_on_disk(tmp_path: Path) -> None:
    embed, label = sentence_embedder("builtin:bag-of-words-8", tmp_path)
    first = embed(["a house is built", "there is no difference"])
    assert label == "builtin:bag-of-words-8" and first.shape == (2, 8) and first.dtype == np.float64
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    again, _ = sentence_embedder("builtin:bag-of-words-8", tmp_path)
    assert np.array_equal(again(["there is no difference"]), first[1:])


def test_a_sentence_transformers_folder_and_its_cache_key(tmp_path: Path) -> None:
    folder = make_sentence_model(tmp_path / "st")
    embed, label = sentence_embedder(str(folder), tmp_path / "cache")
    vectors = embed(["a house is built", "a house is built", "the road"])
    assert label == str(folder) and vectors.shape == (3, 16)
    assert np.allclose(vectors[0], vectors[1]) and not np.allclose(vectors[0], vectors[2])
    key = cache_key(str(folder))
    assert key.startswith(str(folder.resolve()) + "@")
    (folder / "README.md").write_text("changed")  # a re-saved model folder gets another cache file
    assert cache_key(str(folder)) != key


def test_an_unknown_model_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embed, _ = sentence_embedder("no-such-owner/no-such-sentence-model", tmp_path)
    with pytest.raises(ModelError, match=r"^--embedding-model 'no-such-owner/no-such-sentence-model': cannot") as e:
        embed(["a"])
    assert "\n" not in str(e.value)


def test_real_levir_cc_references_in_the_tokens_layout(tmp_path: Path) -> None:
    from tests.conftest import require_shared

    root = require_shared("levir-cc-tokens")
    refs = split_references(root, "tokens", "test")
    assert len(refs) == 1929 and all(len(r) == 5 for r in refs.values())
    names = sorted(refs)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({n: refs[n][0] for n in names}))
    b.write_text(json.dumps({n: refs[names[(i + 1) % len(names)]][0] for i, n in enumerate(names)}))
    c = compare_files(root, [(None, b), (None, a)], fmt="tokens", split="test", resamples=50, permutations=50)
    v = c.pairs[0].metrics["CIDEr"]
    assert c.n == 1929 and v["ci95"][0] > 0 and v["p_value"] == pytest.approx(1 / 51)
