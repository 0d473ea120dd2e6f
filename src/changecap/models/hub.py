"""Model locations: a local directory or a Hugging Face Hub repo id (``user/changecap-hisem-levircc``).

``resolve_model_dir`` turns either into a local directory holding ``config.json``, ``model.safetensors`` and
``vocab.json``. A Hub id is fetched with ``huggingface_hub.snapshot_download`` (only the files a changecap model
directory holds; nothing is executed), which honours ``HF_HUB_OFFLINE=1``: offline, a model already in the local
cache loads, anything else is a one-line :class:`~changecap.errors.ModelError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from changecap.errors import ModelError, first_line

#: files of a model directory (``changecap.models.io``) plus the preprocessing and the card
MODEL_FILES: tuple[str, ...] = ("config.json", "model.safetensors", "vocab.json", "preprocess.json", "README.md")

# "owner/name" or "name", optionally "@revision": Hub repo id characters only, no path separators beyond one slash
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*(?:@[\w./-]+)?$")


def looks_like_repo_id(name: str) -> bool:
    """``True`` for ``owner/name`` (or ``owner/name@revision``) strings that are not existing paths."""
    if not name or name.startswith((".", "/", "~")) or os.sep in name.replace("/", "", 1) or "\\" in name:
        return False
    return "/" in name and bool(_REPO_ID.match(name)) and not Path(name).exists()


def resolve_model_dir(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A local model directory for a path or a Hub repo id (``owner/name[@revision]``).

    A path that exists is returned as is (``load_model`` then checks its files). Anything that looks like a repo id
    is downloaded into (or, offline, found in) the Hugging Face cache. Everything else is a ModelError naming it.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelError(f"{path}: is a file, not a model directory")
    if not looks_like_repo_id(name):
        raise ModelError(f"{path}: model directory not found")
    repo_id, _, at_revision = name.partition("@")
    return _download(repo_id, revision or at_revision or None)


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise ModelError(f"{repo_id}: loading from the Hugging Face Hub needs the huggingface_hub package") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(MODEL_FILES))
    except HfHubHTTPError as e:
        first = first_line(e)
        raise ModelError(f"{repo_id}: cannot download from the Hugging Face Hub ({first})") from None
    except Exception as e:  # noqa: BLE001 - offline/cache misses surface as several huggingface_hub exception types
        if offline or type(e).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
            raise ModelError(
                f"{repo_id}: not a local directory, and not in the Hugging Face cache while offline "
                "(HF_HUB_OFFLINE=1); download it once with a network connection or pass a local directory"
            ) from None
        first = first_line(e)
        raise ModelError(f"{repo_id}: cannot fetch the model from the Hugging Face Hub ({first})") from None
    return Path(folder)
