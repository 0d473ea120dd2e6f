"""Output files: paths checked before work, atomic writes with normal permissions and no temporary file left on any
exit path, leftovers of killed processes recognised, spreadsheet-safe CSV cells."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from changecap.data import files
from changecap.data.files import (
    AtomicFile,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_not_input,
    check_output_dir,
    check_output_file,
    check_output_files,
    csv_safe,
    dir_mode,
    file_mode,
    is_temp_name,
    make_temp_dir,
    remove_stale_temps,
    replace_folder,
    set_normal_modes,
    temp_prefix,
    write_folder,
)
from changecap.errors import DataError

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def umask_027() -> Iterator[None]:
    """A umask other than the usual 022, so a mode that merely happens to match would show."""
    old = os.umask(0o027)
    yield
    os.umask(old)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temp_name(p.name))


def dead_pid() -> int:
    """The id of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------------- permissions
def test_modes_follow_the_umask(umask_027: None) -> None:
    assert file_mode() == 0o640 and dir_mode() == 0o750


def test_atomic_write_gives_the_umask_mode_not_mkstemps_0600(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}" and target.stat().st_mode & 0o777 == 0o640
    folder = make_temp_dir(tmp_path / "model")
    assert folder.stat().st_mode & 0o777 == 0o750 and folder.name.startswith(temp_prefix(tmp_path / "model"))


# ------------------------------------------------------------------------------------------------- atomic writes
def test_replaces_the_old_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "data.bin"  # missing parents are created
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and _leftovers(target.parent) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_exception_inside_the_block_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, exc: BaseException
) -> None:
    target = tmp_path / "captions.csv"
    target.write_text("old")
    with pytest.raises(type(exc)), atomic_write(target) as f:
        f.write("half of the new")
        raise exc
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["captions.csv"]


@pytest.mark.parametrize("planted", [".mask.png.tmp", ".mask.png.tmp-{pid}", ".mask.png.{pid}.tmp"])
def test_a_symlink_planted_at_a_predictable_name_is_never_followed(tmp_path: Path, planted: str) -> None:
    planted = planted.format(pid=os.getpid())  # predictable names beside the target
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / planted).symlink_to(victim)
    atomic_write_bytes(tmp_path / "mask.png", b"PNG data")
    assert victim.read_text() == "precious" and (tmp_path / "mask.png").read_bytes() == b"PNG data"
    assert (tmp_path / planted).is_symlink()  # left alone, not written through


def test_atomic_file_keep_as_and_discard(tmp_path: Path) -> None:
    target = tmp_path / "r.jsonl"
    out = AtomicFile(target, suffix=".part")
    assert out.tmp.name.startswith(temp_prefix(target)) and out.tmp.suffix == ".part"
    out.file.write("{}\n")
    kept = out.keep_as(tmp_path / "r.partial.jsonl")
    assert kept.read_text() == "{}\n" and not target.exists() and _leftovers(tmp_path) == []
    other = AtomicFile(target)
    other.discard()
    assert not target.exists() and _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="suffix"):
        AtomicFile(target, suffix=".bak")


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path: Path, umask_027: None) -> None:
    target = tmp_path / "mask.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(temp_prefix(target)) and tmp.read_bytes() == b""
        tmp.write_bytes(b"PNG data")  # as PIL, rasterio or safetensors write a named file
        assert not target.exists()
    assert target.read_bytes() == b"PNG data" and target.stat().st_mode & 0o777 == 0o640
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"PNG data" and _leftovers(tmp_path) == []


def test_replace_folder_swaps_a_finished_folder_in(tmp_path: Path, umask_027: None) -> None:
    final = tmp_path / "best"
    final.mkdir()
    (final / "old.txt").write_text("old")
    tmp = make_temp_dir(final)
    (tmp / "w.safetensors").write_bytes(b"x")
    (tmp / "w.safetensors").chmod(0o600)  # as safetensors writes it
    assert replace_folder(tmp, final) == final
    assert sorted(p.name for p in final.iterdir()) == ["w.safetensors"] and _leftovers(tmp_path) == []
    assert final.stat().st_mode & 0o777 == 0o750 and (final / "w.safetensors").stat().st_mode & 0o777 == 0o640


def _write_two(tmp: Path) -> list[Path]:
    (tmp / "weights.bin").write_bytes(b"w")
    (tmp / "weights.bin").chmod(0o600)
    (tmp / "config.json").write_text("{}")
    return [tmp / "weights.bin", tmp / "config.json"]


def test_write_folder_new_and_existing(tmp_path: Path, umask_027: None) -> None:
    out = tmp_path / "model"
    assert write_folder(out, _write_two) == out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.bin"]
    assert out.stat().st_mode & 0o777 == 0o750 and (out / "weights.bin").stat().st_mode & 0o777 == 0o640
    (out / "notes.txt").write_text("mine")
    moved: list[str] = []
    real_replace = files.os.replace

    def record(src: object, dst: object) -> None:
        moved.append(Path(str(dst)).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(files.os, "replace", record)
        write_folder(out, _write_two)
    assert moved == ["weights.bin", "config.json"]  # in the order the writer gave, config last
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt", "weights.bin"]
    assert _leftovers(tmp_path) == [] and _leftovers(out) == []


def test_write_folder_cleans_up_and_names_the_folder(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "model", interrupted)
    assert list(tmp_path.iterdir()) == []

    def disk_full(tmp: Path) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match=r"model: cannot write the folder \(No space left on device\)"):
        write_folder(tmp_path / "model", disk_full)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(DataError, match="taken: exists and is not a folder"):
        write_folder(tmp_path / "taken", _write_two)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


# ------------------------------------------------------------------------------------------------- leftovers
def test_remove_stale_temps_removes_only_dead_processes_leftovers(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getppid()
    stale_file = tmp_path / f".out.csv.{dead}.ab12_x.part"
    stale_dir = tmp_path / f".best.{dead}.q9.tmp"
    live = tmp_path / f".out.csv.{alive}.zz.part"
    other_target = tmp_path / f".x.csv.{dead}.zz.part"
    user_file = tmp_path / ".notes.tmp"
    for p in (stale_file, live, other_target, user_file):
        p.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "weights").write_text("x")
    assert remove_stale_temps(tmp_path, "out.csv") == [stale_file]
    assert set(remove_stale_temps(tmp_path)) == {stale_dir, other_target}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, user_file.name])


def test_an_old_folder_whose_target_is_missing_is_renamed_back(tmp_path: Path) -> None:
    dead = dead_pid()
    old = tmp_path / f".best.{dead}.1f2e.old"
    old.mkdir()
    (old / "model.safetensors").write_text("weights")
    (tmp_path / "last").mkdir()
    old_last = tmp_path / f".last.{dead}.77aa.old"
    old_last.mkdir()
    remove_stale_temps(tmp_path)
    assert (tmp_path / "best" / "model.safetensors").read_text() == "weights"  # the kill came between the renames
    assert not old_last.exists() and (tmp_path / "last").is_dir()


# ------------------------------------------------------------------------------------------------- path checks
def test_output_file_checks(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    assert check_output_file(tmp_path / "new" / "deeper" / "out.csv", "--out") == tmp_path / "new/deeper/out.csv"
    with pytest.raises(DataError, match=r"\[--out\]: is a folder") as e:
        check_output_file(tmp_path, "--out")
    assert e.value.path == str(tmp_path)
    with pytest.raises(DataError, match=r"\[--mask\]: cannot create the file: .*a_file is a file, not a folder"):
        check_output_file(tmp_path / "a_file" / "sub" / "m.png", "--mask")
    if Path("/dev/null").exists():
        with pytest.raises(DataError, match="not a regular file"):
            check_output_file("/dev/null", "--out")


def test_output_dir_checks(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    assert check_output_dir(tmp_path / "new" / "run", "train.output_dir") == tmp_path / "new" / "run"
    with pytest.raises(DataError, match=r"a_file \[--mask-dir\]: is a file; a folder is required"):
        check_output_dir(tmp_path / "a_file", "--mask-dir")
    with pytest.raises(DataError, match=r"\[train.output_dir\]: cannot create the folder: .*a_file is a file"):
        check_output_dir(tmp_path / "a_file" / "run", "train.output_dir")


def test_an_output_that_names_an_input_is_refused(tmp_path: Path) -> None:
    pred = tmp_path / "a.json"
    pred.write_text("{}")
    (tmp_path / "link.json").symlink_to(pred)
    for same in (pred, tmp_path / "link.json", tmp_path / "sub" / ".." / "a.json"):
        with pytest.raises(DataError, match=r"\[--json\]: is one of the inputs") as e:
            check_not_input(same, [pred], "--json")
        assert e.value.path == str(same)
    with pytest.raises(DataError, match=r"m\.png \[--mask\]: is an input image"):
        check_not_input(str(pred.with_name("m.png")), [tmp_path / "m.png"], "--mask", "is an input image")
    assert check_not_input(tmp_path / "b.json", [pred], "--json") == tmp_path / "b.json"
    assert pred.read_text() == "{}"


def test_several_outputs_checked_together(tmp_path: Path) -> None:
    pred = tmp_path / "a.json"
    pred.write_text("{}")
    with pytest.raises(DataError, match=r"a\.json \[--json\]: is one of the inputs"):
        check_output_files({"--json": pred}, [pred])
    with pytest.raises(DataError, match=r"x \[--html\]: is also the --json output"):
        check_output_files({"--json": tmp_path / "x", "--html": tmp_path / "x"}, [pred])
    with pytest.raises(DataError, match=r"\[--html\]: is a folder"):
        check_output_files({"--html": tmp_path}, [pred])
    with pytest.raises(DataError, match=r"\[--html\]: cannot create the file: .*a\.json is a file"):
        check_output_files({"--html": pred / "r.html"})
    new = tmp_path / "new" / "c.json"  # a folder still to be made is fine
    assert check_output_files({"--json": new, "--html": None}, [pred]) == {"--json": new}
    assert not new.parent.exists()


def test_whole_file_writes_name_the_file_when_the_file_system_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    target = tmp_path / "r.json"
    target.write_text("earlier")
    monkeypatch.setattr(files.os, "fsync", full)
    for write, data in ((atomic_write_text, "new"), (atomic_write_bytes, b"new")):
        with pytest.raises(DataError, match=r"r\.json: cannot write the file \(No space left on device\)"):
            write(target, data)  # type: ignore[operator]
        assert target.read_text() == "earlier" and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("read_only_fs", "message"), [(True, "read-only file system"), (False, "no permission")])
def test_unwritable_folders_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only_fs: bool, message: str
) -> None:
    """Tests run as root, for whom permission bits do not stop writes: the answer of ``os.access`` is simulated."""
    monkeypatch.setattr(files.os, "access", lambda path, mode: False)
    monkeypatch.setattr(files, "_read_only_fs", lambda folder: read_only_fs)
    for check, path, what in [
        (check_output_dir, tmp_path / "run", "train.output_dir"),
        (check_output_dir, tmp_path, "--mask-dir"),
        (check_output_file, tmp_path / "out.csv", "--out"),
    ]:
        with pytest.raises(DataError, match=message) as e:
            check(path, what)
        assert f"[{what}]" in str(e.value) and "\n" not in str(e.value)


def test_an_existing_read_only_file_is_not_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "captions.csv"
    target.write_text("earlier work")
    real_access = os.access
    monkeypatch.setattr(files.os, "access", lambda p, mode: Path(p) != target and real_access(p, mode))
    with pytest.raises(DataError, match="exists and is read-only"):
        check_output_file(target, "--out")


@pytest.mark.skipif(ROOT or not hasattr(os, "geteuid"), reason="permission bits do not stop root")
def test_a_folder_without_write_permission_for_real(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match="no permission to write"):
            check_output_file(folder / "out.csv", "--out")
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize("cell", ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_get_a_leading_quote(cell: str) -> None:
    assert csv_safe(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["p0.png", "", "a=b", "two houses are built"])
def test_plain_cells_are_unchanged(cell: str) -> None:
    assert csv_safe(cell) == cell


def test_set_normal_modes_walks_the_folder(tmp_path: Path, umask_027: None) -> None:
    folder = make_temp_dir(tmp_path / "model")
    (folder / "sub").mkdir(mode=0o700)
    (folder / "sub" / "w.safetensors").write_bytes(b"x")
    (folder / "sub" / "w.safetensors").chmod(0o600)
    set_normal_modes(folder)
    assert [(folder / p).stat().st_mode & 0o777 for p in ("", "sub", "sub/w.safetensors")] == [0o750, 0o750, 0o640]


def test_set_normal_modes_leaves_hard_linked_files_alone(tmp_path: Path, umask_027: None) -> None:
    """A file hard-linked into the folder (an input, as ``data import`` links PNGs) is also the user's file."""
    source = tmp_path / "mine.png"
    source.write_bytes(b"png")
    source.chmod(0o444)
    folder = make_temp_dir(tmp_path / "set")
    os.link(source, folder / "a.png")
    (folder / "own.json").write_bytes(b"{}")
    (folder / "own.json").chmod(0o600)
    set_normal_modes(folder)
    assert source.stat().st_mode & 0o777 == 0o444 and (folder / "own.json").stat().st_mode & 0o777 == 0o640
