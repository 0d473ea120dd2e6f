"""Headless chromium for the browser tests (Debian's chromium driven by playwright): the binary, installed with
apt-get when it is missing (CI has apt); a test skips, saying why, only where there is neither chromium nor apt-get."""

from __future__ import annotations

import fcntl
import shutil
import subprocess

import pytest


def chromium() -> str:
    """Path of a chromium binary, installed with apt-get if needed (one process at a time: a lock file)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("no chromium on this machine and no apt-get to install Debian's chromium")
    with open("/tmp/changecap-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one installs, the other waits
        found = shutil.which("chromium")
        if found:
            return found
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found
