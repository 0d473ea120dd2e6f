"""The documentation: every command it shows is run or says why not, the site builds strictly and reads offline.

- The marked command blocks of ``docs/*.md`` run as written after ``make demo`` (``tests/doc_workspace.py`` says
  how); every other fenced block of commands in README.md and the pages follows an ``untested-commands`` comment
  that gives the reason.
- ``mkdocs build --strict`` succeeds (a broken link, anchor or API reference, a page missing from the navigation
  fails it), and the built pages load nothing from another host: no script, stylesheet, image or font URL outside
  the site (plain links to other sites are fine).
- The command reference is generated from the argparse parsers, so it lists every command of the installed version.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT
from tests.doc_commands import DocBlock, marked_blocks, unmarked_command_fences
from tests.doc_workspace import needs, run_block

DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: the marked blocks the generic runner runs (a block whose marker names its own test is run there)
BLOCKS = [block for page in PAGES for block in marked_blocks(page) if block.runner is None]
#: attributes of tags that make a browser fetch something (an <a href> is a link the reader may follow)
FETCHING = re.compile(
    r"<(?:script|img|iframe|source|audio|video)\b[^>]*\bsrc=\"(https?:)?//[^\"]*\""
    r"|<link\b[^>]*\bhref=\"(https?:)?//[^\"]*\""
    r"|url\((['\"]?)(https?:)?//",
    re.IGNORECASE,
)


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("changecap_docs_hooks", REPO_ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------ commands
def test_blocks_run_by_their_own_test_name_an_existing_test() -> None:
    runners = {b.id: b.runner for page in PAGES for b in marked_blocks(page) if b.runner is not None}
    missing = {block: runner for block, runner in runners.items() if not (REPO_ROOT / str(runner)).is_file()}
    assert not missing, f"these blocks name a test that does not exist: {missing}"


def test_every_command_block_is_run_or_says_why_not() -> None:
    silent = [str(f) for page in [REPO_ROOT / "README.md", *PAGES] for f in unmarked_command_fences(page)
              if f.reason is None]  # fmt: skip
    assert not silent, (
        "mark these blocks <!-- tested-commands:begin --> … <!-- tested-commands:end -->, or put "
        f"<!-- untested-commands: REASON --> right before them: {silent}"
    )


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_marked_doc_commands_run_after_make_demo(
    block: DocBlock, demo_template: Path, tmp_path: Path, one_torch_thread: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in needs(block):
        pytest.importorskip(module, reason=f"{block.id} needs {module} (an extra that make test installs)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # DFM's caption-embedding cache
    run_block(block, demo_template, tmp_path / "work")


# ------------------------------------------------------------------------------------------------ the site
def test_the_command_reference_lists_every_command() -> None:
    from changecap.cli.main import build_parser

    reference = _hooks().expand("<!-- cli-reference -->")
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in commands.choices.items():
        assert f"## changecap {name}\n" in reference
        assert sub.format_usage().split()[1] in reference  # the usage line, as --help prints it
        for child in next((a.choices for a in sub._actions if isinstance(a, argparse._SubParsersAction)), {}):
            assert f"### changecap {name} {child}\n" in reference


def test_includes_point_readme_links_at_the_site() -> None:
    page = _hooks().expand("<!-- include README.md -->")
    assert "](docs/" not in page and "](hisem.md)" in page and "](images/attention_view.png)" in page


def test_the_site_builds_strictly_and_reads_offline(tmp_path: Path) -> None:
    pytest.importorskip("mkdocstrings", reason="the documentation site needs the 'docs' extra (make env installs it)")
    pytest.importorskip("material", reason="the documentation site needs the 'docs' extra (make env installs it)")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1",
             "PYTHONPATH": str(REPO_ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.relative_to(site).as_posix() for p in site.glob("*.html")}
    assert {f"{p.stem}.html" for p in PAGES} <= pages
    fetching = [
        f"{p.name}: {m.group(0)[:120]}"
        for p in [*site.rglob("*.html"), *site.rglob("*.css")]
        for m in FETCHING.finditer(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not fetching, f"the site loads these from other hosts: {fetching[:10]}"
    api = (site / "api.html").read_text(encoding="utf-8")
    assert "ChangeCaptioner" in api and "from_pretrained" in api  # the reference is generated from the docstrings


def test_sphinx_roles_of_docstrings_become_code_spans() -> None:
    pytest.importorskip("griffe", reason="the API reference needs the 'docs' extra (make env installs it)")
    spec = importlib.util.spec_from_file_location("changecap_docs_griffe", REPO_ROOT / "scripts" / "docs_griffe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "See :func:`~changecap.models.build_model`, :class:`changecap.errors.DataError` and ``x``."
    assert module.plain(text) == "See `build_model`, `changecap.errors.DataError` and ``x``."
