"""Output files shared by every layer above: checked before work starts, written atomically, never half there.

* :func:`check_output_file` / :func:`check_output_dir` validate an output path before any model is loaded or any
  work is done: a folder where a file is wanted (or the reverse), a parent that is a file, a read-only file system or
  a folder without write permission is a one-line :class:`DataError` naming the path and the option.
* :func:`check_not_input` (with :class:`InputPaths`, the inputs resolved once) refuses an output that names one
  of the command's input files; :func:`check_output_files` checks several output files at once (each checked, none
  an input or another output).
* :class:`AtomicFile` (and :func:`atomic_write`, :func:`atomic_write_text`, :func:`atomic_write_bytes`) write to a
  temporary file created exclusively (``tempfile.mkstemp``: a random name opened with ``O_EXCL``, so a file or a
  symbolic link planted at a predictable name is never followed) in the target's folder, fsync it, give it the
  permissions the user's umask gives any new file (``0666 & ~umask``, not mkstemp's 0600) and rename it over the
  target. The temporary file is removed on every exit path that runs Python code (an exception, Ctrl-C, and SIGTERM,
  which the CLI turns into the same clean exit); readers see the old content or the new, never a mix.
* Temporary names are ``.<target name>.<pid>.<random><suffix>``: after a SIGKILL (where nothing can clean up)
  :func:`remove_stale_temps` recognises the leftovers of processes that are no longer running on this machine.
* :func:`atomic_path` is the same for writers that take a file name instead of a file object (rasterio, PIL,
  safetensors' ``save_file``, ``torch.save``).
* :func:`make_temp_dir` is the folder counterpart (a folder built in place and renamed), with ``0777 & ~umask``;
  :func:`set_normal_modes` gives what was written into it the normal modes before the rename. :func:`write_folder`
  builds a folder that way (a model directory: a new one appears whole, an existing one has its files replaced one
  rename each); :func:`replace_folder` swaps a finished folder for an existing one.
* :func:`csv_safe` neutralises spreadsheet formulas in CSV cells.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from changecap.errors import DataError

TEMP_SUFFIXES = (".tmp", ".part", ".old")
# .<target>.<pid>.<random from mkstemp/mkdtemp><suffix>
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+(?P<suffix>\.tmp|\.part|\.old)$")


# ------------------------------------------------------------------------------------------------- permissions
def _umask() -> int:
    """The process umask, read without changing it where the platform allows (``os.umask`` only sets, so reading
    it that way leaves a window in which another thread would create files with the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new regular file gets under the current umask (``0666 & ~umask``)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a new folder gets under the current umask (``0777 & ~umask``)."""
    return 0o777 & ~_umask()


# ------------------------------------------------------------------------------------------------- path checks
def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(path: Path, what: str, kind: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder (it is created from there)."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise DataError(path, f"cannot create the {kind}: {base} is a file, not a folder", field=what)
    _check_writable_dir(base, path, what)


def _check_writable_dir(folder: Path, path: Path, what: str) -> None:
    if os.access(folder, os.W_OK | os.X_OK):
        return
    if _read_only_fs(folder):
        raise DataError(path, f"{folder} is on a read-only file system", field=what)
    raise DataError(path, f"no permission to write in the folder {folder}", field=what)


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows)
        return False


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """Check before any work that ``path`` can be written as a file (created, or replaced atomically); return it.

    ``what`` names the option or field in the message (``--out``). Missing parent folders are fine (the writer
    creates them) as long as the nearest existing one is a writable folder.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(p, "is a folder; a file name is required", field=what)
    if p.exists() and not p.is_file():
        raise DataError(p, "exists and is not a regular file (a device or a pipe); give a file name", field=what)
    if not p.exists():
        _check_creatable(p, what, "file")
        return p
    _check_writable_dir(p.parent, p, what)  # the file is replaced by a rename inside its folder
    if not os.access(p, os.W_OK):
        raise DataError(p, "the file exists and is read-only; remove it or choose another name", field=what)
    return p


def check_output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Check before any work that ``path`` is (or can be created as) a folder the user may write in; return it."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise DataError(p, "is a file; a folder is required", field=what)
    if not p.exists():
        _check_creatable(p, what, "folder")
        return p
    _check_writable_dir(p, p, what)
    return p


def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


class InputPaths:
    """The files a command reads, resolved once (``~``, ``..`` and symbolic links followed), to refuse an output
    that names one of them: outputs are renamed over their names, so the input would be replaced."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.resolved = frozenset(_resolved(p) for p in paths)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and _resolved(path) in self.resolved


def check_not_input(
    path: str | os.PathLike[str],
    inputs: InputPaths | Iterable[str | os.PathLike[str]],
    what: str,
    message: str = "is one of the inputs; choose another name",
) -> Path:
    """Refuse before any work an output ``path`` that is one of ``inputs`` (a one-line :class:`DataError` naming the
    path and the option ``what``); return it."""
    given = inputs if isinstance(inputs, InputPaths) else InputPaths(inputs)
    if path in given:
        raise DataError(path, message, field=what)
    return Path(path).expanduser()


def check_output_files(
    outputs: Mapping[str, str | os.PathLike[str] | None], inputs: Iterable[str | os.PathLike[str]] = ()
) -> dict[str, Path]:
    """Check several output files before any work (``{option: path}``, None for an option not given): none is one
    of ``inputs`` or the same file as another output, and each passes :func:`check_output_file`. Returns the
    given ones as paths."""
    read = InputPaths(inputs)
    seen: dict[Path, str] = {}
    checked: dict[str, Path] = {}
    for what, value in outputs.items():
        if value is None:
            continue
        path = check_not_input(value, read, what)
        same = seen.get(_resolved(path))
        if same is not None:
            raise DataError(path, f"is also the {same} output; choose another name", field=what)
        checked[what] = check_output_file(path, what)
        seen[_resolved(path)] = what
    return checked


# ------------------------------------------------------------------------------------------------- atomic writes
def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temp_prefix(target: Path) -> str:
    """The prefix of every temporary name for ``target`` (see :func:`remove_stale_temps`)."""
    return f".{target.name}.{os.getpid()}."


class AtomicFile:
    """A file written under a fresh temporary name in ``path``'s folder and renamed over ``path`` by :meth:`commit`.

    ``binary``: the file object takes bytes. ``suffix``: the temporary name's suffix (``.part`` for records written
    as they come). Missing parent folders are created with the normal folder mode. Call :meth:`commit` or
    :meth:`discard` (or :meth:`keep_as`); :func:`atomic_write` does it for a ``with`` block.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, binary: bool = False, suffix: str = ".tmp", newline: str | None = None
    ) -> None:
        if suffix not in TEMP_SUFFIXES:
            raise ValueError(f"suffix must be one of {TEMP_SUFFIXES}, got {suffix!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(self.path), suffix=suffix, dir=self.path.parent)
        self.tmp = Path(tmp)
        try:
            if binary:
                self.file: IO[Any] = os.fdopen(fd, "wb")
            else:
                self.file = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        except BaseException:
            os.close(fd)
            self.tmp.unlink(missing_ok=True)
            raise
        self.done = False

    def _finish(self, target: Path) -> Path:
        try:
            if self.file.closed:  # written through its name (atomic_path)
                _fsync_file(self.tmp)
            else:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            os.chmod(self.tmp, file_mode())  # mkstemp creates 0600; a finished output gets the normal mode
            os.replace(self.tmp, target)
        except BaseException:
            self.discard()
            raise
        self.done = True
        fsync_dir(target.parent)
        return target

    def commit(self) -> Path:
        """Rename the finished temporary file over ``path``; the temporary file is gone either way."""
        return self._finish(self.path)

    def keep_as(self, target: str | os.PathLike[str]) -> Path:
        """Rename what was written so far to ``target`` instead (partial records kept under a visible name)."""
        return self._finish(Path(target))

    def discard(self) -> None:
        """Drop the temporary file (``path`` is left as it was)."""
        self.done = True
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, binary: bool = False, newline: str | None = None
) -> Iterator[IO[Any]]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` gets the new content when the block ends normally; on any
    exception (Ctrl-C and SIGTERM included) the temporary file is removed and ``p`` is untouched."""
    out = AtomicFile(path, binary=binary, newline=newline)
    try:
        yield out.file
    except BaseException:
        out.discard()
        raise
    out.commit()


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: writer(tmp)``, for writers that open a file by name: ``tmp`` is a fresh, empty
    file created exclusively in ``p``'s folder; when the block ends normally it is flushed to disk, given the normal
    mode and renamed over ``p``; on any exception it is removed and ``p`` is untouched."""
    out = AtomicFile(path, binary=True)
    out.file.close()  # the writer opens the name itself
    try:
        yield out.tmp
    except BaseException:
        out.discard()
        raise
    out.commit()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so readers see the old or the new content, never a mix; return ``path``.

    A file system that refuses the write (a full disk, a folder that became read-only) is a one-line
    :class:`DataError` naming ``path``."""
    return _write_whole(path, text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` as :func:`atomic_write_text` does; return ``path``."""
    return _write_whole(path, data)


def _write_whole(path: str | os.PathLike[str], data: str | bytes) -> Path:
    try:
        with atomic_write(path, binary=isinstance(data, bytes)) as f:
            f.write(data)
    except OSError as e:
        raise DataError(path, f"cannot write the file ({e.strerror or e})") from None
    return Path(path)


def make_temp_dir(target: str | os.PathLike[str]) -> Path:
    """A fresh, empty folder beside ``target`` (created exclusively, mode ``0777 & ~umask``) to build ``target`` in
    and rename into place; remove it on failure (``shutil.rmtree``)."""
    t = Path(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(t), suffix=".tmp", dir=t.parent))
    os.chmod(tmp, dir_mode())  # mkdtemp creates 0700
    return tmp


def set_normal_modes(folder: str | os.PathLike[str]) -> None:
    """Give a folder built in place, and everything in it, the modes the umask gives new files and folders (some
    writers, safetensors' ``save_file`` among them, create files 0600).

    Symbolic links, and files with another hard link (an input linked into the folder, as ``data import`` does),
    keep their modes: the mode belongs to the file, which is someone else's too."""
    root = Path(folder)
    os.chmod(root, dir_mode())
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, dir_mode())
        elif st.st_nlink == 1:
            os.chmod(path, file_mode())


def replace_folder(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Move the fully written folder ``tmp`` (from :func:`make_temp_dir`) into place as ``final``, replacing a
    folder there; return ``final``.

    ``tmp`` and everything in it get the normal modes first (:func:`set_normal_modes`). An existing ``final`` is
    first renamed to ``.<name>.<pid>.<random>.old`` and removed once the new folder is in place: a kill between the
    two renames leaves it there, and :func:`remove_stale_temps` renames it back.
    """
    src, dst = Path(tmp), Path(final)
    set_normal_modes(src)
    old = dst.with_name(f"{temp_prefix(dst)}{uuid.uuid4().hex[:8]}.old")
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
    return dst


def write_folder(path: str | os.PathLike[str], write: Callable[[Path], Iterable[Path] | None]) -> Path:
    """Write the folder ``path`` through ``write(tmp)``, which fills a fresh temporary folder beside it (and may
    return the paths it wrote, in the order they are to replace their namesakes); return ``path``.

    A new ``path`` appears complete or not at all (one rename); in an existing folder each written file (or folder)
    replaces its namesake by a rename (other files there are left alone). Everything written gets the normal modes
    (some writers, safetensors' ``save_file`` among them, create files 0600). The temporary folder is removed on
    every exit path that runs Python code. A folder that cannot be written (a file in the way, a read-only file
    system, a full disk) is a one-line :class:`DataError` naming it.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder")
    try:
        tmp = make_temp_dir(out)
    except OSError as e:
        raise DataError(out, f"cannot write the folder ({e.strerror or e})") from None
    try:
        order = list(write(tmp) or [])
        set_normal_modes(tmp)
        if not out.exists():
            os.replace(tmp, out)
            fsync_dir(out.parent)
            return out
        names = [Path(p).name for p in order]
        names += sorted(p.name for p in tmp.iterdir() if p.name not in names)
        for name in names:
            if (tmp / name).is_dir() and (out / name).is_dir():
                replace_folder(tmp / name, out / name)  # a folder inside the folder (os.replace needs it empty)
            else:
                os.replace(tmp / name, out / name)
        fsync_dir(out)
    except OSError as e:
        raise DataError(out, f"cannot write the folder ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------- leftovers
def is_temp_name(name: str) -> bool:
    """Whether ``name`` has the form of a temporary name made here (``.<target>.<pid>.<random><suffix>``)."""
    return _TEMP_RE.match(name) is not None


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's process (or no way to tell): leave its files alone
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str], target: str | None = None) -> list[Path]:
    """Remove the temporary files and folders of processes no longer running on this machine from ``folder``
    (only those for the file or folder named ``target`` when given) and return what was removed.

    A ``.old`` folder (an output moved aside while its replacement was renamed in) whose target is missing is
    renamed back instead: the kill came between the two renames, and it is the only copy.
    """
    root = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or (target is not None and m["target"] != target) or _running(int(m["pid"])):
            continue
        path = Path(entry.path)
        final = root / m["target"]
        try:
            if m["suffix"] == ".old" and not final.exists():
                os.replace(path, final)
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(path)
    return removed


# ------------------------------------------------------------------------------------------------- CSV
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: str) -> str:
    """A text cell a spreadsheet will not run as a formula: one beginning with ``=``, ``+``, ``-``, ``@``, a tab or
    a carriage return gets a leading single quote (the usual neutralisation; strip it to read the value back)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell
