"""User-facing errors.

Every error a user can cause (bad file, bad field, bad config value) is raised as a :class:`ChangeCapError`
subclass whose message is a single line naming the file and/or field. The CLI prints ``error: <message>`` and
exits with status 2; library users get a normal exception (``ValueError`` subclass) they can catch.
"""

from __future__ import annotations

from os import PathLike


class ChangeCapError(ValueError):
    """Base class of errors caused by user input. ``str(err)`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # force a single line


class DataError(ChangeCapError):
    """A dataset file or one of its fields is missing or malformed."""

    def __init__(self, path: str | PathLike[str] | None, message: str, field: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.field = field
        self.message = " ".join(str(message).split())  # without the file and field (a caller may name them its way)
        where = self.path or "<input>"
        if field:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}")


class ConfigError(ChangeCapError):
    """A configuration value is unknown or invalid. Names the field (dotted path) and, when known, the file.

    ``.field`` is the dotted field, ``.message`` the bare message and ``.path`` the file (or None); ``str(err)`` is
    ``<path>: config field '<field>': <message>``.
    """

    def __init__(self, field: str, message: str, path: str | PathLike[str] | None = None) -> None:
        self.field = field
        self.message = " ".join(str(message).split())
        self.path = None if path is None else str(path)
        prefix = f"{self.path}: " if self.path else ""
        super().__init__(f"{prefix}config field '{field}': {message}")


class ModelError(ChangeCapError):
    """A saved model directory, checkpoint or vocabulary is missing or inconsistent."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line user errors that
    wrap a library's multi-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
