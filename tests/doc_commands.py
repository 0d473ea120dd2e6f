"""Commands shown in the Markdown docs, extracted from marked blocks so that tests can run them as written.

A marked block is one or more fenced code blocks between two HTML comments (invisible on GitHub)::

    <!-- tested-commands:begin -->
    ```
    # a comment line
    changecap synth --geotiff data/scene --grid 8     # a trailing comment
    changecap caption --pairs DIR \\
        --model demo_out/run/best
    ```
    <!-- tested-commands:end -->

Every line of those fences that is not blank or a comment is one command; a trailing backslash continues it on
the next line. Comments are removed with ``shlex``'s rules (``#`` starting a word), so quoted ``#`` stays.
:func:`python_argv` turns a command into the argv that runs it with this interpreter.

The begin marker may carry options as ``key=value`` words: ``exit=2`` (every command of the block must exit with
that status: an example of an error) and ``prepare=NAME[,NAME]`` (files the test lays out first, e.g. the pairs a
page tells the reader to have). Its other words are a note (``DocBlock.note``); a note that names a test file
(``(tests/cli/test_x.py runs these, in order)``) says that test runs the block (:attr:`DocBlock.runner`).

A fenced block of commands that is not marked is allowed only right after a comment that says why the tests do
not run it (it needs real data, a GPU, …)::

    <!-- untested-commands: needs the LEVIR-CC dataset and a GPU -->
    ```bash
    changecap train configs/hisem_levircc.yaml --set data.root=data/LEVIR-CC
    ```

:func:`unmarked_command_fences` finds those that lack it. Fences tagged ``text``, ``python``, ``yaml``, … hold output,
code or configuration, not commands, and are not checked.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

BEGIN = re.compile(r"^\s*<!--\s*tested-commands:begin\b(?P<options>.*?)-->\s*$")
END = re.compile(r"^\s*<!--\s*tested-commands:end\s*-->\s*$")
UNTESTED = re.compile(r"^\s*<!--\s*untested-commands:\s*(?P<reason>\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^\s*(```|~~~)\s*(?P<info>[\w+-]*)")
OPTION = re.compile(r"\b(exit|prepare)=(\S+)")
RUNNER = re.compile(r"\btests/\S+\.py\b")
#: the first word of a line that makes a fence a block of commands (shell fences only: see COMMAND_FENCES)
COMMAND_WORDS: frozenset[str] = frozenset({"changecap", "make", "torchrun", "python", "pip", "hf"})
#: fence info strings that hold shell commands ("" = no tag)
COMMAND_FENCES: frozenset[str] = frozenset({"", "bash", "sh", "shell", "console"})


@dataclass(frozen=True)
class DocCommand:
    """One command of a marked block: its words and where the doc shows it."""

    argv: tuple[str, ...]
    path: Path
    line: int  # 1-based line of the command's first line

    @property
    def text(self) -> str:
        return shlex.join(self.argv)

    @property
    def subcommand(self) -> str | None:
        """``caption`` for ``changecap caption …``; None for a command that is not changecap's."""
        return self.argv[1] if len(self.argv) > 1 and self.argv[0] == "changecap" else None

    def option(self, name: str) -> str | None:
        """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one given, as argparse reads it)."""
        value = None
        for i, word in enumerate(self.argv):
            if word == name and i + 1 < len(self.argv):
                value = self.argv[i + 1]
            elif word.startswith(name + "="):
                value = word[len(name) + 1 :]
        return value

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.text}"


@dataclass(frozen=True)
class DocBlock:
    """The commands between one pair of markers, in order, and the options of its begin marker."""

    path: Path
    line: int  # 1-based line of the begin marker
    commands: tuple[DocCommand, ...]
    exit_status: int = 0  # what every command must exit with (``exit=N``)
    prepare: tuple[str, ...] = ()  # files the test lays out before the block (``prepare=NAME[,NAME]``)
    note: str = ""  # the begin marker's other words

    @property
    def runner(self) -> str | None:
        """The test file the note names as the one that runs this block (``None``: the generic runner does)."""
        found = RUNNER.search(self.note)
        return found.group(0) if found else None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def marked_blocks(path: str | Path) -> list[DocBlock]:
    """Every marked block of the Markdown file ``path``; a ValueError names the line of a malformed marking
    (a begin without its end, an end without a begin, nested markers, an unclosed fence, no command)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[DocBlock] = []
    begin: int | None = None
    options: dict[str, str] = {}
    note = ""
    in_fence = False
    commands: list[DocCommand] = []
    pending: list[str] = []  # the lines of a command continued with a backslash
    pending_line = 0
    for number, line in enumerate(lines, start=1):
        if FENCE.match(line):  # fences are tracked everywhere: a marker shown inside a code block is no marker
            if in_fence and pending:
                raise ValueError(f"{path}:{pending_line}: a backslash continues the command past its fence")
            in_fence = not in_fence
            continue
        if in_fence:
            if begin is None:
                continue
            if not pending:
                pending_line = number
            pending.append(line.rstrip())
            if line.rstrip().endswith("\\"):
                pending[-1] = pending[-1][:-1]
                continue
            argv = shlex.split(" ".join(pending), comments=True)
            pending = []
            if argv:
                commands.append(DocCommand(tuple(argv), path, pending_line))
        elif marker := BEGIN.match(line):
            if begin is not None:
                raise ValueError(f"{path}:{number}: tested-commands:begin inside the block begun on line {begin}")
            begin, commands, options = number, [], dict(OPTION.findall(marker["options"]))
            note = OPTION.sub("", marker["options"]).strip()
            if not options.get("exit", "0").isdigit():
                raise ValueError(f"{path}:{number}: exit={options['exit']} is not an exit status")
        elif END.match(line):
            if begin is None:
                raise ValueError(f"{path}:{number}: tested-commands:end without a begin")
            if not commands:
                raise ValueError(f"{path}:{begin}: the marked block holds no command in a fenced code block")
            prepare = tuple(p for p in options.get("prepare", "").split(",") if p)
            blocks.append(DocBlock(path, begin, tuple(commands), int(options.get("exit", "0")), prepare, note))
            begin = None
    if begin is not None and in_fence:
        raise ValueError(f"{path}:{begin}: a fenced code block in the marked block is not closed")
    if begin is not None:
        raise ValueError(f"{path}:{begin}: tested-commands:begin without an end")
    return blocks


@dataclass(frozen=True)
class CommandFence:
    """A fenced block of commands outside the marked blocks, and why the tests do not run it (``None``: not said)."""

    path: Path
    line: int  # 1-based line of the opening fence
    first_command: str
    reason: str | None

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.first_command}"


def unmarked_command_fences(path: str | Path) -> list[CommandFence]:
    """Every shell fence of ``path`` outside the marked blocks whose lines include a command (a line starting with
    one of :data:`COMMAND_WORDS`), with the reason given by an ``untested-commands`` comment right before it."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[CommandFence] = []
    in_block = in_fence = False
    fence_line, fence_info, reason = 0, "", None
    body: list[str] = []
    previous = ""  # the last non-blank line outside fences
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if fence and not in_fence:
            in_fence, fence_line, fence_info, body = True, number, fence["info"], []
            reason = m["reason"] if (m := UNTESTED.match(previous)) else None
            continue
        if fence and in_fence:
            in_fence = False
            commands = [b.strip() for b in body if b.split() and b.split()[0] in COMMAND_WORDS]
            if not in_block and fence_info in COMMAND_FENCES and commands:
                found.append(CommandFence(path, fence_line, commands[0], reason))
            previous = line
            continue
        if in_fence:
            body.append(line)
        elif BEGIN.match(line):
            in_block = True
        elif END.match(line):
            in_block = False
        if not in_fence and line.strip():
            previous = line
    return found


def python_argv(command: DocCommand) -> list[str]:
    """The argv that runs ``command`` with this interpreter: ``changecap …`` becomes ``python -m changecap …``."""
    if command.argv[0] == "changecap":
        return [sys.executable, "-m", "changecap", *command.argv[1:]]
    return list(command.argv)
