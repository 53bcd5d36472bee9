"""The documentation builds cleanly, and the README's quick start is the two commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "guide"
README = REPO / "README.rst"

QUICK_START = "Quick start on a fresh machine"


def _sphinx(builder: str, out: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("sphinx")
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", builder,
         str(GUIDE), str(out), "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )


def test_guide_builds_without_warnings(tmp_path: Path) -> None:
    proc = _sphinx("html", tmp_path / "html")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "WARNING" not in output and "ERROR" not in output, output
    assert (tmp_path / "html" / "calling-conventions.html").exists()


def test_guide_doctests_pass(tmp_path: Path) -> None:
    """The examples that need no server (``.. doctest::`` blocks) really run."""
    proc = _sphinx("doctest", tmp_path / "doctest")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _quick_start_blocks() -> list[str]:
    docutils_core = pytest.importorskip("docutils.core")
    from docutils import nodes

    doctree = docutils_core.publish_doctree(
        README.read_text(encoding="utf-8"),
        source_path=str(README),
        settings_overrides={"report_level": 5, "halt_level": 5},
    )
    sections = [
        s for s in doctree.findall(nodes.section)
        if s.next_node(nodes.title).astext() == QUICK_START
    ]
    assert len(sections) == 1, f"README.rst needs one section titled {QUICK_START!r}"
    return [block.astext() for block in sections[0].findall(nodes.literal_block)]


def test_readme_quick_start_is_exactly_two_commands() -> None:
    blocks = _quick_start_blocks()
    assert len(blocks) == 1, blocks
    lines = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert lines == ["./dev.sh demo", "./dev.sh test"]


def test_readme_is_valid_rest() -> None:
    docutils_core = pytest.importorskip("docutils.core")
    from docutils.utils import SystemMessage

    try:
        docutils_core.publish_doctree(
            README.read_text(encoding="utf-8"),
            source_path=str(README),
            settings_overrides={"report_level": 5, "halt_level": 2},  # halt on warnings
        )
    except SystemMessage as exc:
        pytest.fail(f"README.rst: {exc}")
