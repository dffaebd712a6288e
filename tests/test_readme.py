"""The README starts with the two set-up commands, and CI runs the second one."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = "python3 -m venv .venv && "
# llama.cpp compiled for the build machine's own CPU features (GGML_NATIVE, its default) segfaults on the first
# request on Xeons with AMX (ggml_backend_amx_mul_mat, seen on this project's machines): both commands build it portably.
PORTABLE = 'CMAKE_ARGS="-DGGML_NATIVE=OFF" '
INSTALL_AND_RUN = VENV + PORTABLE + ".venv/bin/pip install . && .venv/bin/grace-pipeline run"
TEST = VENV + PORTABLE + '.venv/bin/pip install ".[test]" && .venv/bin/python -m pytest'


def test_readme_opens_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ")
    block = lines[lines.index("```bash") + 1 : lines.index("```")]
    assert block == [INSTALL_AND_RUN, TEST]
    assert lines.index("```bash") <= 3


def test_each_command_works_on_a_pep668_python():
    """A stock Debian/Ubuntu Python refuses `pip install` outside a virtual environment: every pip and
    every installed program in the two commands must come from the venv the command itself creates."""
    for command in (INSTALL_AND_RUN, TEST):
        steps = command.split(" && ")
        assert steps[0] == "python3 -m venv .venv"
        programs = [step.removeprefix(PORTABLE).split()[0] for step in steps[1:]]
        assert all(program.startswith(".venv/bin/") for program in programs), command


def test_every_install_builds_llama_cpp_portably():
    """The README's two installs and CI's own (lint) install all compile llama.cpp without GGML_NATIVE, so the
    build CI tests is the build a newcomer gets."""
    for command in (INSTALL_AND_RUN, TEST):
        (install,) = [step for step in command.split(" && ") if "pip install" in step]
        assert install.startswith(PORTABLE)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'export CMAKE_ARGS="-DGGML_NATIVE=OFF"' in ci.splitlines()
    assert ci.index("export CMAKE_ARGS") < ci.index("pip install")


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST in ci
    assert 'if [ "$status" -eq 5 ]' in ci  # pytest's "no tests collected" is a failure
    assert "export CI=" in ci  # the browser test fails instead of skipping in CI


def test_ci_lints_before_the_tests_and_a_finding_fails_it():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = ci.splitlines()
    assert "set -euo pipefail" in lines
    lint = [lines.index(".venv/bin/ruff check ."), lines.index(".venv/bin/mypy")]
    assert max(lint) < lines.index("set +e")  # still under `set -e`: a finding stops CI with its exit code
    assert ci.index(".venv/bin/mypy") < ci.index(TEST)


@pytest.mark.filterwarnings("ignore:The `json` method is deprecated")  # inside Hera 7.1's service
def test_readme_hera_submission_snippet_works(monkeypatch, capsys):
    """The README's plain-Hera example, run as written against a recorded Argo answer."""
    import json
    import re

    import responses

    from tests.test_argo_api import HOST, NS, SUBMITTED, TOKEN

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL) if "WorkflowsService" in block]
    monkeypatch.setenv("ARGO_SERVER", HOST)
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    with responses.RequestsMock() as mocked:
        mocked.post(f"{HOST}/api/v1/workflows/{NS}/submit", json=SUBMITTED)
        exec(compile(snippet, "README.md", "exec"), {})  # noqa: S102 - our own documentation
        body = json.loads(mocked.calls[0].request.body)
    assert body["resourceKind"] == "WorkflowTemplate" and body["resourceName"] == "grace-pipeline"
    assert body["submitOptions"]["parameters"] == ["models=llama-3.1-8b-instruct", "limit=10"]
    assert capsys.readouterr().out.strip() == SUBMITTED["metadata"]["name"]


def test_the_readme_retry_list_is_the_workflows():
    """The cluster section names every exit code the WorkflowTemplate retries, and no other."""
    import re

    from pipeline.cluster.workflow import TRANSIENT_EXIT_CODES

    text = (REPO / "README.md").read_text(encoding="utf-8")
    retries = text.split("- Retries: transient failures only (", 1)[1].split(")", 1)[0]
    named = {int(c) for c in re.findall(r"(?<![\d-])(\d{1,3})\b", retries)}  # not -1 (retried by its own rule)
    assert named == set(TRANSIENT_EXIT_CODES)
