"""Stand-ins: foundations ``changecap pretrain`` builds from a run's own training data, named in a config as
``standin:FILE.yaml`` and kept in a cache keyed by everything they are built from.

A config value ``standin:pretrain/clip_synthcc_cpu.yaml`` names a pretraining config (relative to the config file
that holds the value) and stands for the directory ``changecap pretrain`` writes from it with ``data.root`` set to
the run's own ``data.root``: a foundation trained on that dataset's train split only. Where real weights go
(``model.encoder.pretrained``, ``model.caption.llm``, ``model.caption.qformer_pretrained``, a pretraining config's
``model.sam`` / ``model.tokenizer``), a stand-in goes the same way. The directories live in the stand-in cache::

    <cache>/standins/<target>-<key>/      <cache>: $CHANGECAP_CACHE, else $XDG_CACHE_HOME/changecap,
                                          else ~/.cache/changecap

``<key>`` is 16 hex digits of a SHA-256 over the target, the resolved pretraining config (every field except
``train.output_dir`` and ``logging``; ``data.root`` left out, the data's identity taken instead), the keys of the
stand-ins it names itself (the ``qformer`` target's SAM and tokenizer) and the data identity: the bytes of the
root's annotation files (``scene_captions.json``, ``LevirCCcaptions.json``, a folder's captions and class files)
and the relative name and size of every training image and map. A change to any of them gives another key, so a
stand-in is never reused for other data or another config; moving or copying the data keeps it.

:func:`resolve_standins` replaces every ``standin:`` value of a config section by its directory; a stand-in not
built yet is a one-line :class:`~changecap.errors.ConfigError` naming the field and the exact ``changecap
pretrain`` command that builds it. :func:`changecap.engine.pretrain.build_standins` (``changecap train
--build-standins``, ``make demo``) builds the missing ones first, each stand-in after those it names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from changecap.data.single_date import SCENE_CAPTIONS_FILE
from changecap.errors import ConfigError

PREFIX = "standin:"
CACHE_ENV = "CHANGECAP_CACHE"
CARD_FILE = "pretrain_card.json"  # written last into the folder that is renamed into place: present = complete
#: annotation files whose bytes belong to a data root's identity (those present)
IDENTITY_FILES: tuple[str, ...] = (
    "scene_captions.json", "LevirCCcaptions.json", "captions.csv", "captions.jsonl", "classes.txt", "classes.json",
)  # fmt: skip


def cache_root() -> Path:
    """``$CHANGECAP_CACHE``, else ``$XDG_CACHE_HOME/changecap``, else ``~/.cache/changecap``."""
    own = os.environ.get(CACHE_ENV)
    if own:
        return Path(own).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "changecap"


def standin_cache() -> Path:
    """The folder holding the stand-ins (``<cache>/standins``)."""
    return cache_root() / "standins"


def is_standin(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass
class StandIn:
    """One stand-in a config names: its pretraining config, data, key and directory."""

    ref: str  # the config value, e.g. "standin:pretrain/clip_synthcc_cpu.yaml"
    field: str  # where it was found, e.g. "model.encoder.pretrained"
    config_path: Path  # the pretraining config (absolute)
    target: str
    data_root: Path  # absolute
    key: str
    directory: Path
    needs: list[StandIn] = field(default_factory=list)  # stand-ins its own config names

    @property
    def built(self) -> bool:
        return (self.directory / CARD_FILE).is_file()

    @property
    def overrides(self) -> list[str]:
        return [f"data.root={json.dumps(str(self.data_root))}"]

    def command(self) -> str:
        """The ``changecap pretrain`` command that builds this stand-in where resolution looks for it."""
        return (
            f"changecap pretrain {self.target} {shlex.quote(str(self.config_path))} "
            f"--set data.root={shlex.quote(str(self.data_root))} --output-dir {shlex.quote(str(self.directory))}"
        )

    def walk(self) -> Iterator[StandIn]:
        """This stand-in's dependencies (depth first), then itself."""
        for need in self.needs:
            yield from need.walk()
        yield self


def _values(section: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """``(dotted field, value)`` of every stand-in reference in a nested section."""
    if isinstance(section, Mapping):
        for k, v in section.items():
            yield from _values(v, f"{prefix}.{k}")
    elif isinstance(section, list):
        for i, v in enumerate(section):
            yield from _values(v, f"{prefix}[{i}]")
    elif is_standin(section):
        yield prefix, section


def _replace(section: Any, found: Mapping[str, str]) -> Any:
    if isinstance(section, Mapping):
        return {k: _replace(v, found) for k, v in section.items()}
    if isinstance(section, list):
        return [_replace(v, found) for v in section]
    return found.get(section, section) if is_standin(section) else section


#: data fields added to pretraining configs after stand-ins were first cached, with the value that keeps the old
#: behaviour: at that value they stay out of the key, so the stand-ins already built stay valid
KEY_NEUTRAL_DATA: dict[str, Any] = {"documents": False}
_UNSET = object()


def data_identity(root: Path, source: str = "auto", captions: str | None = None) -> str:
    """SHA-256 (hex) of a data root's training data: its annotation files' bytes, then the relative name and size
    of every training image and map (module docstring). The data's own reader finds them (one-line errors)."""
    from changecap.data.pretrain_data import read_pretrain_corpus

    corpus = read_pretrain_corpus(root, source, "train", captions, check_files=False)
    h = hashlib.sha256(f"source={corpus.source}\n".encode())
    extra = [Path(captions)] if captions else []
    for path in [root / name for name in IDENTITY_FILES] + extra:
        if path.is_file():
            h.update(f"file {path.name} {path.stat().st_size}\n".encode())
            h.update(path.read_bytes())
    for r in corpus.records:
        for p in (r.image_path, r.landcover_path):
            if p is None:
                continue
            try:
                size = p.stat().st_size
            except OSError:
                size = -1  # missing: pretraining reports it; the key only needs to differ
            h.update(f"{p.relative_to(corpus.root).as_posix()} {size}\n".encode())
    return h.hexdigest()


class StandInResolver:
    """Plans the stand-ins of config sections for one data root (data identity computed once per source)."""

    def __init__(self, data_root: str | os.PathLike[str]) -> None:
        self.data_root = Path(data_root).expanduser().resolve()
        self._identity: dict[tuple[str, str | None], str] = {}
        self._plans: dict[Path, StandIn] = {}

    def identity(self, source: str, captions: str | None) -> str:
        key = (source, captions)
        if key not in self._identity:
            self._identity[key] = data_identity(self.data_root, source, captions)
        return self._identity[key]

    def plan(self, ref: str, field: str, base: Path, stack: tuple[Path, ...] = ()) -> StandIn:
        """The stand-in ``ref`` (``standin:FILE``, FILE relative to ``base``) names, with its dependencies."""
        from changecap.engine.pretrain_config import load_pretrain_config

        name = ref[len(PREFIX) :].strip()
        if not name:
            raise ConfigError(field, f"{ref!r}: name a pretraining config after '{PREFIX}' (e.g. "
                              f"{PREFIX}pretrain/clip_synthcc_cpu.yaml)")  # fmt: skip
        path = (base / Path(name).expanduser()).resolve()
        if path in stack:
            raise ConfigError(field, f"{ref!r}: the pretraining configs name each other in a cycle")
        if path in self._plans:  # met before (e.g. as another stand-in's dependency): the same folder
            return dataclasses.replace(self._plans[path], ref=ref, field=field)
        if not path.is_file():
            raise ConfigError(field, f"{ref!r}: no pretraining config at {path}")
        config = load_pretrain_config(path, [f"data.root={json.dumps(str(self.data_root))}"])
        if config.target is None:
            raise ConfigError("target", "a stand-in's pretraining config must name its target", path=path)
        needs = [self.plan(v, f, path.parent, (*stack, path)) for f, v in _values(config.model, "model")]
        plain = config.to_dict()
        plain["data"] = {k: v for k, v in plain["data"].items()
                         if k != "root" and KEY_NEUTRAL_DATA.get(k, _UNSET) != v}  # fmt: skip
        plain["train"] = {k: v for k, v in plain["train"].items() if k != "output_dir"}
        plain.pop("logging", None)
        plain["model"] = _replace(plain["model"], {n.ref: f"{n.target}-{n.key}" for n in needs})
        if config.data.source == "synthcc" and not (self.data_root / SCENE_CAPTIONS_FILE).is_file():
            # a user's own pairs or LEVIR-CC: the SynthCC stand-ins have nothing to pretrain on there
            raise ConfigError(
                field,
                f"stand-in {ref} pretrains on SynthCC's single-date captions ({SCENE_CAPTIONS_FILE}), which "
                f"{self.data_root} does not have; train the random-init form of this config (configs/*_scratch.yaml), "
                f"point {field} at pretrained weights, or pretrain on your own images and captions "
                "(docs/pretraining.md)",
            )
        payload = {
            "target": config.target,
            "config": plain,
            "data": self.identity(config.data.source, config.data.captions),
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        plan = StandIn(ref, field, path, config.target, self.data_root, digest,
                       standin_cache() / f"{config.target}-{digest}", needs)  # fmt: skip
        self._plans[path] = plan
        return plan

    def plans(self, section: Any, base: Path, prefix: str = "model") -> list[StandIn]:
        """Every stand-in a config section names (in the order met)."""
        return [self.plan(value, f, base) for f, value in _values(section, prefix)]


def config_base(source: str | os.PathLike[str] | None) -> Path:
    """The folder ``standin:`` paths are relative to: the config file's, else the working directory."""
    return Path(source).expanduser().resolve().parent if source else Path.cwd()


def find_standins(
    section: Any, data_root: str | os.PathLike[str], source: str | os.PathLike[str] | None, prefix: str = "model"
) -> list[StandIn]:
    """The stand-ins a config section names, planned for ``data_root`` (nothing is built or required)."""
    if not any(True for _ in _values(section, prefix)):
        return []
    return StandInResolver(data_root).plans(section, config_base(source), prefix)


def resolve_standins(
    section: dict[str, Any],
    data_root: str | os.PathLike[str],
    source: str | os.PathLike[str] | None,
    prefix: str = "model",
) -> dict[str, Any]:
    """A copy of ``section`` with every ``standin:`` value replaced by its built directory; a stand-in (or one it
    needs) not built yet is a one-line ConfigError naming the field and the command that builds it."""
    plans = find_standins(section, data_root, source, prefix)
    for plan in plans:
        for need in plan.walk():
            if not need.built:
                what = "" if need is plan else f" (needed by {plan.ref})"
                raise ConfigError(
                    plan.field,
                    f"stand-in {need.ref}{what} is not built yet for {need.data_root} (train with "
                    f"--build-standins to build what is missing); build it with: {need.command()}",
                    path=source,
                )
    return _replace(section, {p.ref: str(p.directory) for p in plans})

