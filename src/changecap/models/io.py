"""Saving and loading changecap models as self-describing directories.

A saved model is a directory::

    config.json        {"format": "changecap-model", "format_version": 2, "architecture": name,
                        "changecap_version", "model": the architecture's config (its to_dict(), "architecture" too)}
    model.safetensors  the full state dict; never pickled, so loading runs no code
    vocab.json         the decoder's vocabulary in the peers' {token: id} format
    README.md          model card (architecture, parameter counts, training data, metrics, protocol)

Which model class is built, how it is described and which config class reads ``model`` all come from the
architecture registry (``changecap.models.registry``); nothing here knows a particular system. Format version 1
(changecap 0.1) had no top-level ``architecture``; it is read from ``model.architecture`` then, so 0.1 model
directories still load. Other files in the directory (e.g. ``preprocess.json``) are left alone. ``load_model`` also
accepts a Hugging Face Hub repo id (``changecap.models.hub``).
Writes are atomic (:func:`changecap.data.files.write_folder`): a new directory is assembled under a temporary name
and renamed into place; into an existing directory each file is written under a temporary name and renamed, weights
first and ``config.json`` last. Files and folders get the modes the umask gives any new file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from changecap.data.files import write_folder
from changecap.data.vocab import Vocabulary
from changecap.errors import ChangeCapError, ConfigError, ModelError
from changecap.models.hub import resolve_model_dir
from changecap.models.registry import architecture_of, build_model, config_from_dict, get_architecture
from changecap.schema import with_path

FORMAT_TAG = "changecap-model"
FORMAT_VERSION = 2
CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, CARD_FILE = "config.json", "model.safetensors", "vocab.json", "README.md"


# ---------------------------------------------------------------------------------------------------- saving
def _state_dict_for_safetensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU tensors that each own their whole storage, as safetensors requires.

    Tied/shared tensors, non-contiguous ones and views into a larger buffer (e.g. slices made by a converter) are
    copied; everything else is written without a copy. A model may leave out weights it references instead of
    copying (a frozen pretrained LLM): ``model.saved_state_dict()``, when it has one, says what is written.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in saved_state_dict(model).items():
        t = t.detach().cpu()
        storage = t.untyped_storage()
        owns_storage = (
            t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        )
        if not owns_storage or (t.numel() > 0 and storage.data_ptr() in seen):
            t = t.contiguous().clone()
        if t.numel() > 0:
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _count(module: torch.nn.Module | None, trainable: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def _submodule(model: torch.nn.Module, dotted: str) -> torch.nn.Module | None:
    """``model.<a>.<b>`` or None (an absent optional part, e.g. a model without encoder)."""
    module: Any = model
    for name in dotted.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module if isinstance(module, torch.nn.Module) else None


def architecture_rows(model: torch.nn.Module, config: Any) -> list[tuple[str, str, int]]:
    """``(part, description, parameters)`` rows of the model card, from the architecture's ``card_rows``."""
    spec = architecture_of(config)
    if spec.card_rows is not None:
        rows = spec.card_rows(model, config)
    else:
        rows = [(name, type(child).__name__) for name, child in model.named_children()]
    return [(part, text, _count(_submodule(model, part)) if part else 0) for part, text in rows]


def model_card(model: torch.nn.Module, config: Any, vocab: Vocabulary, card: Mapping[str, Any] | None = None) -> str:
    """Markdown model card. ``card`` may give ``title``, ``description``, ``training_data``, ``metrics`` (a mapping
    name → value, or text), ``protocol``, ``license``, ``citation``, and any other key (listed under *Notes*)."""
    card = dict(card or {})
    from changecap.version import __version__

    arch = config.architecture
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines = [
        f"# {card.pop('title', f'changecap {arch} change captioner')}",
        "",
        str(card.pop("description", "Remote sensing image change captioning model saved by changecap.")),
        "",
        "## Architecture",
        "",
        "| part | module | parameters |",
        "|---|---|---:|",
        *(f"| {part or '-'} | {text} | {n:,} |" for part, text, n in architecture_rows(model, config)),
        f"| **total** | trainable {trainable:,} | **{total:,}** |",
        "",
        f"Vocabulary: {len(vocab)} entries; max caption length {config.max_length} tokens; changecap {__version__}.",
        "",
    ]
    sections = (("training_data", "Training data"), ("metrics", "Metrics"), ("protocol", "Evaluation protocol"))
    for key, title in sections:
        value = card.pop(key, None)
        lines += [f"## {title}", ""]
        if value is None:
            lines.append("not recorded")
        elif isinstance(value, Mapping):
            lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in value.items()]
        else:
            lines.append(str(value))
        lines.append("")
    for key, title in (("license", "License"), ("citation", "Citation")):
        if key in card:
            lines += [f"## {title}", "", str(card.pop(key)), ""]
    if card:
        lines += ["## Notes", ""] + [f"- **{k}**: {v}" for k, v in card.items()] + [""]
    usage = ["```python", "import changecap", "model = changecap.load_model('<this directory>')", "```"]
    lines += ["## Usage", "", *usage, ""]
    return "\n".join(lines)


def _write_files(directory: Path, model: torch.nn.Module, config: Any, vocab: Vocabulary, card: str) -> list[Path]:
    """Write every file into ``directory`` (weights first, config last); return the written paths in order."""
    from safetensors.torch import save_file

    from changecap.version import __version__

    weights = directory / WEIGHTS_FILE
    save_file(_state_dict_for_safetensors(model), str(weights), metadata={"format": FORMAT_TAG})
    vocab.save(directory / VOCAB_FILE)
    (directory / CARD_FILE).write_text(card, encoding="utf-8")  # a fresh temporary folder: plain writes
    folders = []
    for name, source in bundled_folders(config).items():
        src = Path(source).expanduser()
        if not src.is_dir():
            raise ModelError(f"the model keeps a copy of '{source}' in its directory ({name}/): not a local directory")
        shutil.copytree(src, directory / name)
        folders.append(directory / name)
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "architecture": config.architecture,
        "changecap_version": __version__,
        "model": config.to_dict(),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return [weights, *folders, directory / VOCAB_FILE, directory / CARD_FILE, directory / CONFIG_FILE]


def bundled_folders(config: Any) -> dict[str, str]:
    """Folders a saved model keeps a copy of in its directory (the config's ``bundled_folders()``, when it has one:
    e.g. a small LLM Semantic-CC would otherwise reference)."""
    select = getattr(config, "bundled_folders", None)
    return dict(select()) if callable(select) else {}


def save_model(
    model: torch.nn.Module,
    config: Any,
    vocab: Vocabulary,
    out_dir: str | os.PathLike[str],
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` as a directory (see module docstring) and return its path.

    ``config`` must describe ``model`` (normally ``model.config``; ``None`` takes it); it is checked against the
    model's weights by a shape comparison at load time, and ``vocab`` must have ``config.vocab_size`` entries.
    """
    if config is None:
        config = getattr(model, "config", None)
        if config is None:
            raise ModelError("save_model: the model has no .config; pass the config it was built from")
    architecture_of(config)  # an architecture the registry knows, so load_model can rebuild it
    if len(vocab) != config.vocab_size:
        raise ModelError(
            f"vocabulary has {len(vocab)} entries but the model's decoder has vocab_size={config.vocab_size}"
        )
    config.validate()
    config = _with_encoder_architecture(model, config)
    text = model_card(model, config, vocab, card)
    return write_folder(out_dir, lambda tmp: _write_files(tmp, model, config, vocab, text))


def _with_encoder_architecture(model: torch.nn.Module, config: Any) -> Any:
    """Record the encoder's actual CLIPVisionConfig fields so ``load_model`` can rebuild it without the network."""
    fields = getattr(getattr(model, "encoder", None), "config_fields", None)
    encoder_config = getattr(config, "encoder", None)
    if encoder_config is None or not isinstance(fields, dict) or not hasattr(encoder_config, "config"):
        return config
    d = config.to_dict()
    d["encoder"]["config"] = fields
    return config_from_dict(d)


# ---------------------------------------------------------------------------------------------------- loading
def read_model_config(directory: str | os.PathLike[str]) -> Any:
    """The model config object of a saved model directory, from ``config.json`` alone (no weights, no build)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing (not a saved changecap model directory)")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        raise ModelError(f"{path}: not a changecap model config (field 'format' must be '{FORMAT_TAG}')")
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ModelError(
            f"{path}: format_version {version!r} is not supported by this changecap (reads 1 to {FORMAT_VERSION})"
        )
    section = payload.get("model")
    if not isinstance(section, dict):
        raise ModelError(f"{path}: field 'model' (the model configuration) is missing or not a mapping")
    arch = payload.get("architecture", section.get("architecture")) if version >= 2 else section.get("architecture")
    if version >= 2 and section.get("architecture", arch) != arch:
        raise ModelError(
            f"{path}: field 'architecture' is {arch!r} but 'model.architecture' is {section.get('architecture')!r}"
        )
    try:
        get_architecture(arch, "architecture" if version >= 2 and "architecture" in payload else "model.architecture")
        return config_from_dict({**section, "architecture": arch}, prefix="model")
    except ConfigError as e:  # re-raise naming the file as well as the field
        raise with_path(e, path) from None


def _read_vocab(directory: Path, config: Any) -> Vocabulary:
    path = directory / VOCAB_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing (the model's vocabulary)")
    vocab = Vocabulary.load(path)
    if len(vocab) != config.vocab_size:
        raise ModelError(
            f"{path}: vocab.json has {len(vocab)} entries but the checkpoint's decoder expects {config.vocab_size}"
        )
    return vocab


def saved_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds for ``model``: its ``saved_state_dict()`` when it defines one (weights it
    references by id are left out), else the whole state dict."""
    select = getattr(model, "saved_state_dict", None)
    return select() if callable(select) else model.state_dict()


def first_non_finite(tensors: Iterable[torch.Tensor]) -> int | None:
    """Index of the first floating-point tensor holding a NaN or an infinity (None when every value is finite)."""
    for i, t in enumerate(tensors):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return i
    return None


def _load_weights(model: torch.nn.Module, path: Path, part_of_file: bool = False) -> None:
    """Every tensor ``model`` saves, from ``path`` (checked: present, shape, every value finite); ``part_of_file``: the
    file may hold more (a branch loaded from its whole model's weights), which are not read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"{path}: missing (the model weights)")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{path}: cannot read safetensors file ({reason})") from None
    expected = saved_state_dict(model)
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{path}: missing tensor '{missing[0]}'{more} required by config.json's architecture")
    unexpected = [] if part_of_file else [k for k in state if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ModelError(f"{path}: unexpected tensor '{unexpected[0]}'{more} not in config.json's architecture")
    for key, t in expected.items():
        if tuple(state[key].shape) != tuple(t.shape):
            raise ModelError(
                f"{path}: tensor '{key}' has shape {list(state[key].shape)} but config.json's architecture expects "
                f"{list(t.shape)}"
            )
    if part_of_file:
        state = {k: state[k] for k in expected}
    bad = first_non_finite(state[k] for k in expected)
    if bad is not None:
        key = list(expected)[bad]
        raise ModelError(
            f"{path}: tensor '{key}' holds non-finite values (NaN or inf): the file is damaged or its training diverged"
        )
    missing, _ = model.load_state_dict(state, strict=False)  # every saved key was checked above
    not_referenced = set(missing) - (set(model.state_dict()) - set(expected))
    if not_referenced:
        raise ModelError(f"{path}: missing tensor '{sorted(not_referenced)[0]}' required by config.json's architecture")


def load_model_bundle(
    model_dir: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Any, Vocabulary]:
    """Load a saved model directory or Hub repo id → ``(model in eval mode on device, its config, Vocabulary)``.

    No network access for a directory: the architecture is rebuilt from ``config.json`` (the encoder from the saved
    CLIPVisionConfig fields), then every weight comes from ``model.safetensors``. A Hub id is fetched first (see
    ``changecap.models.hub``).
    """
    directory = resolve_model_dir(model_dir)
    config = read_model_config(directory)
    bundled = getattr(config, "with_bundled_folders", None)
    if callable(bundled):  # what the directory holds a copy of is loaded from there
        config = bundled(directory)
    vocab = _read_vocab(directory, config)
    try:
        # Every weight comes from model.safetensors, except those the model references by id (a frozen pretrained
        # LLM): those are loaded from their source, which needs it cached or a network.
        references = getattr(config, "references_pretrained", None)
        load_pretrained = bool(references()) if callable(references) else False
        model = build_model(config, load_pretrained=load_pretrained, init_weights=False)
    except ConfigError as e:  # a field only the builder checks: still naming config.json
        raise with_path(e, directory / CONFIG_FILE) from None
    except ChangeCapError:
        raise
    except Exception as e:  # an architecture transformers or torch rejects: still one line naming the file
        raise ModelError(f"{directory / CONFIG_FILE}: cannot build the model ({type(e).__name__}: {e})") from None
    _load_weights(model, directory / WEIGHTS_FILE)
    model.to(device).eval()
    model.vocab = vocab
    model.model_dir = directory
    return model, model.config, vocab


def load_change_prior(model_dir: str | os.PathLike[str]) -> tuple[torch.nn.Module, Any]:
    """The change-detection branch of a saved model (registry ``Architecture.change_prior``: the whole model for
    ``change_detection``, encoder + neck + CD decoder for ``semantic_cc``) on the CPU in eval mode, and the full
    model's config. Only the branch's tensors are read from ``model.safetensors`` (no LLM is built or loaded)."""
    directory = resolve_model_dir(model_dir)
    config = read_model_config(directory)
    spec = architecture_of(config)
    if spec.change_prior is None:
        raise ModelError(f"{directory}: a {spec.name} model has no change-detection branch to serve as a prior")
    try:
        branch = spec.change_prior(config, load_pretrained=False, init_weights=False)
    except ConfigError as e:  # as in load_model_bundle
        raise with_path(e, directory / CONFIG_FILE) from None
    except ChangeCapError:
        raise
    except Exception as e:  # as in load_model_bundle: one line naming the file
        raise ModelError(
            f"{directory / CONFIG_FILE}: cannot build the change branch ({type(e).__name__}: {e})"
        ) from None
    _load_weights(branch, directory / WEIGHTS_FILE, part_of_file=True)
    return branch.eval(), config


def load_model(model_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a saved model directory (or Hub repo id) → model in eval mode with ``.config`` and ``.vocab``."""
    model, _, _ = load_model_bundle(model_dir, device)
    return model


# ---------------------------------------------------------------------------------------------------- torch files
def torch_load_weights_only(path: str | os.PathLike[str], what: str, *, mmap: bool = False) -> Any:
    """Read a ``torch.save`` file with ``torch.load(..., weights_only=True)`` onto the CPU: tensors, numbers,
    strings, lists and dicts only. A pickled Python object (a class to build, a function to call) is refused, never
    run. ``mmap``: map the tensors from the file instead of reading them (zip-format files; older ones are read).

    Any failure is one :class:`ModelError` line, ``<path>: cannot read <what> (<why>)``; the one place the project
    loads a pickle, so every reader reports a damaged or hostile file alike.
    """
    p = Path(path)
    try:
        if mmap:
            try:
                return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
        return torch.load(p, map_location="cpu", weights_only=True)  # legacy (non-zip) serialisation
    except Exception as e:  # noqa: BLE001 - a pickle error, an unsupported global, a truncated file, ...
        raise ModelError(f"{p}: cannot read {what} ({torch_load_failure(e)})") from None


def torch_load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, on one line (torch's own messages span many lines and advise
    loading without ``weights_only``, which would run the file's code)."""
    text = str(e)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"it pickles a Python object ({found.group(1)}), which is never run here: only tensors, numbers, "
                "strings, lists and dicts are read")  # fmt: skip
    if "WeightsUnpickler error:" in text:
        detail = " ".join(text.split("WeightsUnpickler error:", 1)[1].split())
        detail = detail.split(" Check the documentation", 1)[0].split(". Please use", 1)[0]
    else:
        detail = " ".join(text.split(". ", 1)[0].split())[:200]
    return f"damaged, or not a torch file: {type(e).__name__}" + (f": {detail}" if detail else "")
