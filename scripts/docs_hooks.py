"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks: [scripts/docs_hooks.py]``).

Three markers in a page's Markdown are replaced before the page is rendered, so the site never holds a second copy
of text that lives elsewhere:

- ``<!-- include README.md -->`` and ``<!-- include CHANGELOG.md -->``: the file from the repository root, its links
  into ``docs/`` rewritten to the site's pages (``docs/evaluation.md`` → ``evaluation.md``);
- ``<!-- cli-reference -->``: every ``changecap`` command's ``--help``, generated from the argparse parsers of
  ``changecap.cli``, so the reference cannot fall behind the code.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"<!--\s*include\s+([A-Za-z0-9_.-]+\.md)\s*-->")
CLI_MARKER = "<!-- cli-reference -->"
#: the width the help text is wrapped to (argparse reads $COLUMNS)
HELP_WIDTH = 100


def included_markdown(name: str) -> str:
    """``name`` from the repository root, with links and images under ``docs/`` made relative to the site."""
    text = (REPO / name).read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", text)


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """The sub-parsers of ``parser`` in the order of its ``--help``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _help(parser: argparse.ArgumentParser) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return parser.format_help().rstrip()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    """Markdown for every command and sub-command of ``changecap``: a heading and its ``--help`` in a code block."""
    src = str(REPO / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from changecap.cli.main import build_parser

    parser = build_parser()
    parts = ["## changecap", "", "```text", _help(parser), "```", ""]
    for name, sub in _subcommands(parser):
        parts += [f"## changecap {name}", "", "```text", _help(sub), "```", ""]
        for child, subsub in _subcommands(sub):
            parts += [f"### changecap {name} {child}", "", "```text", _help(subsub), "```", ""]
    return "\n".join(parts)


def expand(markdown: str) -> str:
    """``markdown`` with its include and CLI-reference markers replaced."""
    markdown = INCLUDE.sub(lambda m: included_markdown(m.group(1)), markdown)
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return expand(markdown)
