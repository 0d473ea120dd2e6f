"""The README's marked command blocks run as written after ``make demo`` (``tests/doc_workspace.py`` says how), and
the extraction of marked blocks from Markdown (``tests/doc_commands.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.doc_commands import DocBlock, marked_blocks, python_argv, unmarked_command_fences
from tests.doc_workspace import needs, run_block

README = REPO_ROOT / "README.md"
BLOCKS = marked_blocks(README)


def test_the_readme_has_a_marked_block() -> None:
    assert BLOCKS, "README.md has no <!-- tested-commands:begin --> block"


def test_the_readme_is_a_short_landing_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 180, f"README.md has {len(lines)} lines; move details into docs/"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_marked_readme_commands_run_after_make_demo(
    block: DocBlock, demo_template: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    for module in needs(block):
        pytest.importorskip(module, reason=f"{block.id} needs {module} (an extra that make test installs)")
    run_block(block, demo_template, tmp_path / "work")


# ------------------------------------------------------------------------------------------------ the extractor
def test_extraction_of_marked_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```\nchangecap info   # not marked\n```\n"
        "<!-- tested-commands:begin -->\n"
        "```bash\n# a comment line\n\nchangecap caption --pairs 'a b' --out x.csv   # trailing\n"
        "changecap scene b.tif a.tif \\\n    --out=scene_out\n```\n"
        "text between fences\n"
        "```\necho '# kept'\n```\n"
        "<!-- tested-commands:end -->\n"
        "````\n<!-- tested-commands:begin -->\n````\n"  # a marker shown inside a code block is no marker
    )
    (block,) = marked_blocks(doc)
    assert block.id == "doc.md:4"
    assert [c.argv for c in block.commands] == [
        ("changecap", "caption", "--pairs", "a b", "--out", "x.csv"),
        ("changecap", "scene", "b.tif", "a.tif", "--out=scene_out"),
        ("echo", "# kept"),
    ]
    assert [c.line for c in block.commands] == [8, 9, 14]
    caption, scene, echo = block.commands
    assert caption.option("--pairs") == "a b" and scene.option("--out") == "scene_out" and echo.subcommand is None
    assert python_argv(caption)[1:3] == ["-m", "changecap"] and python_argv(echo) == ["echo", "# kept"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- tested-commands:begin -->\n```\nchangecap info\n```\n", "without an end"),
        ("<!-- tested-commands:end -->\n", "without a begin"),
        ("<!-- tested-commands:begin -->\n<!-- tested-commands:begin -->\n", "inside the block"),
        ("<!-- tested-commands:begin -->\nno fence\n<!-- tested-commands:end -->\n", "no command"),
        ("<!-- tested-commands:begin -->\n```\nchangecap info\n", "not closed"),
        ("<!-- tested-commands:begin -->\n```\nchangecap info \\\n```\n<!-- tested-commands:end -->\n", "backslash"),
    ],
)
def test_malformed_markings_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    with pytest.raises(ValueError, match=message):
        marked_blocks(doc)


def test_options_of_the_begin_marker(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- tested-commands:begin exit=2 prepare=my-pairs,other -->\n```\nchangecap info\n```\n"
        "<!-- tested-commands:end -->\n"
        "<!-- tested-commands:begin (run in order) -->\n```\nchangecap info\n```\n<!-- tested-commands:end -->\n"
    )
    first, second = marked_blocks(doc)
    assert (first.exit_status, first.prepare) == (2, ("my-pairs", "other"))
    assert (second.exit_status, second.prepare) == (0, ())
    doc.write_text("<!-- tested-commands:begin exit=x -->\n```\nchangecap info\n```\n<!-- tested-commands:end -->\n")
    with pytest.raises(ValueError, match="not an exit status"):
        marked_blocks(doc)


def test_unmarked_command_fences_and_their_reasons(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- untested-commands: needs LEVIR-CC -->\n```bash\nchangecap train x.yaml\n```\n"  # a reason: allowed
        "\n```\n# set up\nmake demo\n```\n"  # no reason
        "```text\nchangecap compare --data ROOT [...]\n```\n"  # a synopsis: not commands
        "```python\nimport changecap\n```\n"
        "```bash\nls data/\n```\n"  # no changecap, make, torchrun, python, pip or hf command
        "<!-- tested-commands:begin -->\n```\nchangecap info\n```\n<!-- tested-commands:end -->\n"  # marked
    )
    found = unmarked_command_fences(doc)
    assert [(f.line, f.first_command, f.reason) for f in found] == [
        (2, "changecap train x.yaml", "needs LEVIR-CC"),
        (6, "make demo", None),
    ]


def test_a_note_naming_a_test_names_the_runner(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "<!-- tested-commands:begin (tests/cli/test_x.py runs these, in order) -->\n```\nchangecap info\n```\n"
        "<!-- tested-commands:end -->\n"
    )
    (block,) = marked_blocks(doc)
    assert block.note == "(tests/cli/test_x.py runs these, in order)" and block.runner == "tests/cli/test_x.py"
