"""The README starts with the two set-up commands, and CI runs the second one."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_AND_RUN = "pip install . && grace-pipeline run"
TEST = 'pip install ".[test]" && python -m pytest'


def test_readme_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert block == [INSTALL_AND_RUN, TEST]
    assert lines.index("```bash") <= 3


def test_ci_runs_the_readme_test_command():
    assert TEST in (REPO / ".ci" / "run").read_text(encoding="utf-8")
