"""``grace-pipeline render / submit / status / retry`` end to end through main() (hand-written Argo answers,
mocked with `responses`), and the /health wait of a step whose vLLM sidecar is still loading."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import responses

from pipeline.cli import main
from pipeline.cluster.workflow import render_yaml
from pipeline.runner.local import wait_for_health
from steps.errors import ServerError
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.test_argo_api import HOST, NS, PREPARE_OK, QUERY_POD_FAILED, STATUS_MIXED, SUBMITTED, TOKEN, WF, WF_URL, _workflow


@pytest.fixture
def argo_env(monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", HOST)
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    monkeypatch.setenv("ARGO_NAMESPACE", NS)


def test_render_writes_the_template_and_the_charts_copy(tmp_path, capsys):
    assert main(["render", "-o", str(tmp_path / "wt.yaml"), "--chart", str(tmp_path / "chart")]) == 0
    text = render_yaml()
    assert (tmp_path / "wt.yaml").read_text() == text == (tmp_path / "chart" / "files" / "workflowtemplate.yaml").read_text()
    assert main(["render"]) == 0
    assert capsys.readouterr().out.endswith(text)


def test_submit_prints_name_and_link_and_never_the_token(argo_env, capsys):
    with responses.RequestsMock() as mocked:
        mocked.post(f"{HOST}/api/v1/workflows/{NS}/submit", json=SUBMITTED)
        code = main(["submit", "-p", "models=gemma-2-9b-it,llama-3.1-8b-instruct", "-p", "limit=10", "-p", "scoring=exact"])
        body = json.loads(mocked.calls[0].request.body)
        assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    out = capsys.readouterr()
    assert code == 0
    assert body["resourceKind"] == "WorkflowTemplate" and body["resourceName"] == "grace-pipeline"
    assert sorted(body["submitOptions"]["parameters"]) == ["limit=10", "models=gemma-2-9b-it,llama-3.1-8b-instruct", "scoring=exact"]
    assert f"submitted {WF}" in out.out and f"{HOST}/workflows/{NS}/{WF}" in out.out
    assert TOKEN not in out.out + out.err


@pytest.mark.parametrize("parameter, message", [("modles=x", "unknown workflow parameter 'modles'"),
                                                ("scoring=best", "must be one of ['exact', 'first-token', 'seed-literal']"),
                                                ("limit", "unknown workflow parameter 'limit'"),
                                                ("models=llama-3.1-8b-instrukt", "unknown model(s) ['llama-3.1-8b-instrukt']")])
def test_submit_rejects_bad_parameters_before_calling_argo(argo_env, capsys, parameter, message):
    with responses.RequestsMock() as mocked:  # any request would fail: none is registered
        assert main(["submit", "-p", parameter]) == 2
        assert not mocked.calls
    assert message in capsys.readouterr().err


def test_submit_wait_follows_until_the_end(argo_env, capsys, monkeypatch):
    import pipeline.cluster.argo_api as argo_api

    monkeypatch.setattr(argo_api.time, "sleep", lambda s: None)
    with responses.RequestsMock() as mocked:
        mocked.post(f"{HOST}/api/v1/workflows/{NS}/submit", json=SUBMITTED)
        mocked.get(WF_URL, json=STATUS_MIXED)
        mocked.get(WF_URL, json=_workflow("Failed", [PREPARE_OK, QUERY_POD_FAILED], finished="2024-05-01T11:00:00Z"))
        assert main(["submit", "--wait"]) == 8  # the workflow failed: its own code, not 1 ("unexpected error")
    out, err = capsys.readouterr()
    assert f"workflow {WF}: Failed" in out and "query(0:gemma)(0)" in out
    assert f"grace-pipeline status {WF}" in err and f"grace-pipeline retry {WF}" in err


def test_status_shows_each_node(argo_env, capsys):
    with responses.RequestsMock() as mocked:
        mocked.get(WF_URL, json=STATUS_MIXED)
        assert main(["status", WF]) == 0
    out = capsys.readouterr().out
    assert f"workflow {WF}: Running" in out
    for shown in ("prepare", "Succeeded", "query(0:gemma)(0)", "Failed", "query(1:qwen)", "Running"):
        assert shown in out


def test_retry_resets_only_failed_nodes(argo_env, capsys):
    with responses.RequestsMock() as mocked:
        mocked.put(f"{WF_URL}/retry", json=_workflow("Running", [PREPARE_OK]))
        assert main(["retry", WF]) == 0
        assert json.loads(mocked.calls[0].request.body)["restartSuccessful"] is False
    assert f"retrying the failed nodes of {WF}" in capsys.readouterr().out


@pytest.mark.parametrize("status, code", [(401, 2), (403, 2), (404, 2), (500, 4), (503, 4)])
def test_argo_errors_exit_2_when_refused_4_when_down_never_with_the_token(argo_env, capsys, status, code):
    with responses.RequestsMock() as mocked:
        mocked.get(WF_URL, status=status, json={"code": 16, "message": f"token {TOKEN} not valid"})
        assert main(["status", WF]) == code
    err = capsys.readouterr().err
    assert str(status) in err and TOKEN not in err


def test_unreachable_argo_server_exits_4(monkeypatch, capsys):
    monkeypatch.setenv("ARGO_SERVER", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert main(["status", WF]) == 4
    assert "could not connect" in capsys.readouterr().err


def test_step_waits_for_the_sidecar_to_become_healthy():
    async def wait(server, timeout_s):
        async with httpx.AsyncClient() as http:
            await wait_for_health(http, server.url, timeout_s, poll_s=0.2)

    with FakeOpenAIServer(healthy_after_polls=2) as loading:
        asyncio.run(wait(loading, 600))
        assert loading.health_requests == 3  # 503 twice while "loading", then 200
    with FakeOpenAIServer(healthy_after_s=60) as stuck:
        with pytest.raises(ServerError, match="not healthy after 1 s"):
            asyncio.run(wait(stuck, 1))


def test_status_names_nested_nodes_by_their_model(argo_env, capsys):
    """A pod inside a model's DAG shows as gpu1-22g(0:llama-3.1-8b-instruct).serve(0), not a bare 'serve(0)'."""
    from tests.test_argo_api import _node

    serve = _node(f"{WF}-7", "serve(0)", "Pod", "Failed", template="serve-gpu1-22g", exit_code="4",
                  message="the vLLM server of llama-3.1-8b-instruct exited with code 137")
    serve["name"] = f"{WF}.gpu1-22g(0:llama-3.1-8b-instruct).serve(0)"
    with responses.RequestsMock() as mocked:
        mocked.get(WF_URL, json=_workflow("Failed", [PREPARE_OK, serve], finished="2024-05-01T11:00:00Z"))
        assert main(["status", WF]) == 0
    out = capsys.readouterr().out
    assert "gpu1-22g(0:llama-3.1-8b-instruct).serve(0)" in out and "exited with code 137" in out


def test_submit_prints_the_cost_model_and_dry_run_submits_nothing(argo_env, capsys):
    with responses.RequestsMock() as mocked:  # no request may be sent
        code = main(["submit", "--dry-run", "-p", "models=llama-3.1-70b-instruct,gemma-2-9b-it,gemma-3-270m",
                     "--study-rows", "1=300,2=2424"])
        assert not mocked.calls
    out = capsys.readouterr().out
    assert code == 0 and "dry run: nothing submitted" in out
    assert "study 1: 300 rows, study 2: 2424 rows" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("llama", "gemma-2"))}
    assert lines["llama-3.1-70b-instruct"][1:4] == ["4", "1", "141.0GB"]  # GPUs, loads, downloaded once
    assert "no GPU: gemma-3-270m" in out and "GPU-hours" in out
    with responses.RequestsMock() as mocked:  # without --study-rows the files are read: the bundled examples, limit 2
        assert main(["submit", "--dry-run", "-p", "models=gemma-2-9b-it", "-p", "limit=2"]) == 0
    assert "study 1: 2 rows, study 2: 2 rows" in capsys.readouterr().out


def test_progress_goes_to_argos_progress_file(tmp_path, monkeypatch):
    from rich.console import Console

    from pipeline.progress import ProgressReporter

    progress_file = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress_file))
    reporter = ProgressReporter(Console(file=open(tmp_path / "log", "w")), live=False)
    with reporter:
        reporter.start("query-a", 3, already_done=1)
        assert progress_file.read_text().strip() == "1/3"
        reporter.start("probabilities-a", 2, already_done=0)
        for node, ok in (("query-a", True), ("query-a", False), ("probabilities-a", True), ("probabilities-a", True)):
            reporter.advance(node, ok)
    assert progress_file.read_text().strip() == "5/5"


def test_readmes_cost_table_is_what_dry_run_prints(argo_env, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (command, table) = re.findall(r"\$ (grace-pipeline submit --dry-run [^\n]+)\n(.*?)```", readme, re.DOTALL)[0]
    assert main(command.split()[1:]) == 0
    printed = capsys.readouterr().out
    for line in table.strip().splitlines():
        assert line in printed, f"README.md's cost table is stale: {line!r}"
