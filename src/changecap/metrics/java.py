"""Locating Java and the reference jars shipped with pycocoevalcap.

pycocoevalcap is only used as a *container* of the jars (METEOR 1.5 with its paraphrase table, Stanford CoreNLP
3.4.1 for the PTB tokenizer): we find its directory with ``importlib.util.find_spec``, which does not execute any of
its code, and never import it at runtime.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

# The reference scripts are run with an English UTF-8 locale so that Java's default-locale case folding (METEOR's
# ``-norm``) and text decoding do not depend on the user's environment (e.g. a Turkish locale lower-cases "I" to a
# dotless i). Both jars decode and encode their text as UTF-8 themselves, so a system without the en_US.UTF-8 locale
# installed still gives the same tokens and scores (checked with Java 17).
JAVA_LOCALE = "en_US.UTF-8"


def find_java() -> str | None:
    """Path of the ``java`` executable on PATH, or None."""
    return shutil.which("java")


def pycocoevalcap_dir() -> Path | None:
    """Directory of the installed pycocoevalcap package (a namespace package), or None when not installed."""
    try:
        spec = importlib.util.find_spec("pycocoevalcap")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    return Path(locations[0]) if locations else None


def java_env() -> dict[str, str]:
    """Environment for the Java subprocesses: the caller's, with the locale forced (see ``JAVA_LOCALE``)."""
    env = dict(os.environ)
    env["LC_ALL"] = JAVA_LOCALE
    env["LANG"] = JAVA_LOCALE
    return env
