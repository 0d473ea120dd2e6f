"""The entry point: user errors are one line with exit 2; SIGTERM runs the same cleanup as Ctrl-C and exits 143;
the process's own SIGTERM handler is restored afterwards."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import pytest

from changecap.cli import cmd_info
from changecap.cli.main import main
from changecap.data.files import atomic_write


def test_sigterm_during_a_command_is_a_clean_exit_143(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.txt"

    def terminated_mid_write(args: argparse.Namespace) -> int:
        with atomic_write(target) as f:
            f.write("half")
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises in this thread, here
            f.write("never")
        return 0

    monkeypatch.setattr(cmd_info, "run", terminated_mid_write)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["info"]) == 143
    assert capsys.readouterr().err.strip() == "terminated"
    assert list(tmp_path.iterdir()) == []  # the temporary file went with the exception
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_is_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_info, "run", interrupted)
    assert main(["info"]) == 130 and capsys.readouterr().err.strip() == "interrupted"
