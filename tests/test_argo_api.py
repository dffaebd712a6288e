"""ArgoClient against hand-written Argo Workflows API answers in the API's shape (mocked with `responses`; not
recordings of this workflow: their node names are made up)."""

from __future__ import annotations

import copy
import json
import socket
import threading

import pytest
import requests
import responses
from hera.shared import global_config

from pipeline.cluster.argo_api import ArgoClient, ArgoError, NodeState
from steps.errors import ConfigError

HOST = "https://argo.example.org:2746"
NS = "grace"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.s3cr3t-payload.sig"
WF = "grace-pipeline-x7k2p"
WF_URL = f"{HOST}/api/v1/workflows/{NS}/{WF}"
SUBMIT_URL = f"{HOST}/api/v1/workflows/{NS}/submit"

# A Workflow object as POST /api/v1/workflows/{ns}/submit returns it (trimmed, same shape).
SUBMITTED = {
    "metadata": {
        "name": WF,
        "generateName": "grace-pipeline-",
        "namespace": NS,
        "uid": "5b0c3f1e-4d0a-4b8f-9a53-0f1f2b9c8e11",
        "resourceVersion": "918273",
        "generation": 1,
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "labels": {
            "workflows.argoproj.io/workflow-template": "grace-pipeline",
            "workflows.argoproj.io/creator": "system-serviceaccount-argo-grace-submitter",
            "grace/study": "1",
        },
        "managedFields": [{"manager": "argo", "operation": "Update", "apiVersion": "argoproj.io/v1alpha1"}],
    },
    "spec": {
        "arguments": {"parameters": [{"name": "study", "value": "1"}, {"name": "models", "value": "gemma,qwen"}]},
        "workflowTemplateRef": {"name": "grace-pipeline"},
    },
    "status": {},
}


def _node(node_id, display, type_, phase, template="", started=None, finished=None, exit_code=None, message=None):
    node = {
        "id": node_id,
        "name": f"{WF}.{display}" if node_id != WF else WF,
        "displayName": display,
        "type": type_,
        "templateScope": "local/",
        "phase": phase,
        "boundaryID": WF,
        "startedAt": started,
        "finishedAt": finished,
        "progress": "0/1",
    }
    if template:
        node["templateName"] = template
    if message:
        node["message"] = message
    if exit_code is not None:
        node["outputs"] = {"exitCode": exit_code}
    if type_ == "Pod":
        node["hostNodeName"] = "gpu-node-3"
        node["resourcesDuration"] = {"cpu": 12, "memory": 40}
    return node


def _workflow(phase, nodes, finished=None, message=None):
    wf = copy.deepcopy(SUBMITTED)
    wf["metadata"]["labels"]["workflows.argoproj.io/phase"] = phase or "Pending"
    status = {"phase": phase, "startedAt": "2024-05-01T10:00:00Z", "finishedAt": finished, "progress": "1/4"}
    if message:
        status["message"] = message
    status["nodes"] = {n["id"]: n for n in nodes}
    wf["status"] = {k: v for k, v in status.items() if v is not None}
    return wf


DAG_RUNNING = _node(WF, WF, "DAG", "Running", template="main", started="2024-05-01T10:00:00Z")
PREPARE_OK = _node(
    f"{WF}-1111", "prepare", "Pod", "Succeeded", "prepare", "2024-05-01T10:00:02Z", "2024-05-01T10:00:30Z", "0"
)
QUERY_RETRY_FAILED = _node(
    f"{WF}-2222", "query(0:gemma)", "Retry", "Failed", "query", "2024-05-01T10:00:31Z", "2024-05-01T10:05:00Z",
    message="No more retries left",
)
QUERY_POD_FAILED = _node(
    f"{WF}-3333", "query(0:gemma)(0)", "Pod", "Failed", "query", "2024-05-01T10:00:31Z", "2024-05-01T10:05:00Z",
    exit_code="3", message="Error (exit code 3)",
)
QUERY_POD_RUNNING = _node(f"{WF}-4444", "query(1:qwen)", "Pod", "Running", "query", "2024-05-01T10:00:31Z")
COLLECT_RUNNING = _node(f"{WF}-6666", "collect", "Pod", "Running", "collect", "2024-05-01T10:05:10Z")
SCORE_OMITTED = _node(
    f"{WF}-5555", "score", "Skipped", "Omitted", "score", message="omitted: depends condition not met"
)

STATUS_MIXED = _workflow(
    "Running",
    [SCORE_OMITTED, COLLECT_RUNNING, QUERY_POD_RUNNING, QUERY_POD_FAILED, DAG_RUNNING, QUERY_RETRY_FAILED, PREPARE_OK],
)


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def client():
    return ArgoClient(HOST, TOKEN, NS)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("ARGO_SERVER", "ARGO_TOKEN", "ARGO_NAMESPACE", "ARGO_INSECURE_SKIP_VERIFY", "ARGO_SECURE"):
        monkeypatch.delenv(var, raising=False)


def _body(call) -> dict:
    return json.loads(call.request.body)


# -- submit / get / retry: method, path, body, auth ----------------------------------------


def test_submit_posts_workflow_template_request(mocked, client):
    mocked.post(SUBMIT_URL, json=SUBMITTED)
    name = client.submit(
        "grace-pipeline",
        {"study": "1", "models": "gemma,qwen", "prompt": "a=b"},
        generate_name="grace-pipeline-",
        labels={"grace/study": "1", "team": "pragmatics"},
    )
    assert name == WF
    (call,) = mocked.calls
    assert call.request.method == "POST"
    assert call.request.url == SUBMIT_URL
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.request.headers["Content-Type"] == "application/json"
    assert _body(call) == {
        "namespace": NS,
        "resourceKind": "WorkflowTemplate",
        "resourceName": "grace-pipeline",
        "submitOptions": {
            "parameters": ["study=1", "models=gemma,qwen", "prompt=a=b"],
            "generateName": "grace-pipeline-",
            "labels": "grace/study=1,team=pragmatics",
        },
    }


def test_submit_without_generate_name_leaves_it_to_argo(mocked, client):
    mocked.post(SUBMIT_URL, json=SUBMITTED)
    client.submit("grace-pipeline", {"study": "2"})
    options = _body(mocked.calls[0])["submitOptions"]
    assert options == {"parameters": ["study=2"]}


@pytest.mark.parametrize("params", [{"": "x"}, {"a=b": "x"}])
def test_submit_rejects_bad_parameter_names_before_any_request(mocked, client, params):
    with pytest.raises(ConfigError):
        client.submit("grace-pipeline", params)
    assert len(mocked.calls) == 0


def test_get_returns_plain_dict(mocked, client):
    mocked.get(WF_URL, json=STATUS_MIXED)
    wf = client.get(WF)
    (call,) = mocked.calls
    assert call.request.method == "GET"
    assert call.request.url.split("?")[0] == WF_URL
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert type(wf) is dict
    assert wf["metadata"]["name"] == WF
    assert wf["spec"]["workflowTemplateRef"] == {"name": "grace-pipeline"}
    assert wf["status"]["nodes"][f"{WF}-3333"]["outputs"] == {"exitCode": "3"}
    assert wf["status"]["startedAt"] == "2024-05-01T10:00:00Z"  # a string, not a datetime
    assert "finishedAt" not in wf["status"]  # None values are left out


def test_retry_puts_restart_successful_false(mocked, client):
    mocked.put(f"{WF_URL}/retry", json=_workflow("Running", [DAG_RUNNING]))
    assert client.retry(WF) is None
    (call,) = mocked.calls
    assert call.request.method == "PUT"
    assert call.request.url == f"{WF_URL}/retry"
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert _body(call) == {"name": WF, "namespace": NS, "restartSuccessful": False}


def test_namespace_is_in_every_path(mocked):
    other = ArgoClient(HOST, TOKEN, "team-b")
    mocked.get(f"{HOST}/api/v1/workflows/team-b/{WF}", json=STATUS_MIXED)
    mocked.put(f"{HOST}/api/v1/workflows/team-b/{WF}/retry", json=STATUS_MIXED)
    mocked.post(f"{HOST}/api/v1/workflows/team-b/submit", json=SUBMITTED)
    other.get(WF)
    other.retry(WF)
    other.submit("grace-pipeline", {})
    assert [c.request.url.split("?")[0] for c in mocked.calls] == [
        f"{HOST}/api/v1/workflows/team-b/{WF}",
        f"{HOST}/api/v1/workflows/team-b/{WF}/retry",
        f"{HOST}/api/v1/workflows/team-b/submit",
    ]


def test_token_given_with_bearer_prefix_is_not_doubled(mocked):
    c = ArgoClient(HOST, f"Bearer {TOKEN}", NS)
    mocked.get(WF_URL, json=STATUS_MIXED)
    c.get(WF)
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_token_sends_no_authorization_header_even_with_hera_global_token(mocked, monkeypatch):
    monkeypatch.setattr(global_config, "_token", "global-hera-token")
    c = ArgoClient(HOST, None, NS)
    mocked.get(WF_URL, json=STATUS_MIXED)
    c.get(WF)
    assert "Authorization" not in mocked.calls[0].request.headers


def test_host_path_prefix_is_kept(mocked):
    c = ArgoClient("https://example.org/argo/", TOKEN, NS)
    mocked.get(f"https://example.org/argo/api/v1/workflows/{NS}/{WF}", json=STATUS_MIXED)
    assert c.phase(WF) == "Running"
    assert c.ui_link(WF) == f"https://example.org/argo/workflows/{NS}/{WF}"


def test_ui_link(client):
    assert client.ui_link(WF) == f"{HOST}/workflows/{NS}/{WF}"


def test_invalid_workflow_name_is_rejected_before_any_request(mocked, client):
    with pytest.raises(ConfigError):
        client.get("../secrets?x=1")
    assert len(mocked.calls) == 0


# -- status: phase and nodes ------------------------------------------------------------


def test_phase(mocked, client):
    mocked.get(WF_URL, json=STATUS_MIXED)
    assert client.phase(WF) == "Running"


def test_phase_is_empty_before_the_controller_picked_it_up(mocked, client):
    mocked.get(WF_URL, json=SUBMITTED)
    assert client.phase(WF) == ""
    assert client.nodes(WF) == []


def test_nodes_are_parsed_and_sorted(mocked, client):
    mocked.get(WF_URL, json=STATUS_MIXED)
    nodes = client.nodes(WF)
    assert [n.name for n in nodes] == [
        WF,
        "prepare",
        "query(0:gemma)",
        "query(0:gemma)(0)",
        "query(1:qwen)",
        "collect",  # by start time, not by name
        "score",  # never started: last
    ]
    by_name = {n.name: n for n in nodes}
    assert by_name["query(0:gemma)(0)"] == NodeState(
        name="query(0:gemma)(0)",
        template="query",
        type="Pod",
        phase="Failed",
        message="Error (exit code 3)",
        started_at="2024-05-01T10:00:31Z",
        finished_at="2024-05-01T10:05:00Z",
        exit_code="3",
    )
    assert by_name["prepare"].exit_code == "0"
    assert by_name["query(0:gemma)"].type == "Retry"
    assert by_name["query(0:gemma)"].exit_code is None
    assert by_name["query(1:qwen)"].finished_at is None
    assert by_name["score"] == NodeState(
        "score", "score", "Skipped", "Omitted", "omitted: depends condition not met", None, None, None
    )
    assert by_name[WF].template == "main" and by_name[WF].type == "DAG"


# -- errors: clear, named, never the token ------------------------------------------------


def _assert_clean(err: ArgoError, operation: str, subject: str):
    text = str(err)
    assert TOKEN not in text and "s3cr3t" not in text
    assert TOKEN not in repr(err)
    assert HOST in text
    assert operation in text
    assert subject in text
    assert err.exit_code == (4 if err.transient else 2)  # down: 4; refused (401/403/404/...): fix the options, 2


@pytest.mark.parametrize(
    "status, body, expect",
    [
        (401, {"code": 16, "message": f"token not valid: Bearer {TOKEN}"}, "ARGO_TOKEN"),
        (403, {"code": 7, "message": 'workflows.argoproj.io "x" is forbidden'}, "RBAC"),
        (404, {"code": 5, "message": f'workflows.argoproj.io "{WF}" not found'}, "not found"),
        (500, {"code": 2, "message": "etcdserver: request timed out"}, "retry later"),
        (502, "<html><body>502 Bad Gateway</body></html>", "retry later"),
        (503, {"error": "upstream connect error"}, "retry later"),  # JSON without "message"
    ],
)
def test_get_http_errors_become_argo_error(mocked, client, status, body, expect):
    if isinstance(body, dict):
        mocked.get(WF_URL, json=body, status=status)
    else:
        mocked.get(WF_URL, body=body, status=status)
    with pytest.raises(ArgoError) as info:
        client.get(WF)
    _assert_clean(info.value, "get workflow", WF)
    assert f"HTTP {status}" in str(info.value)
    assert expect in str(info.value)
    assert info.value.status == status
    assert info.value.transient == (status >= 500)


def test_401_message_tells_to_check_the_token(mocked, client):
    mocked.post(SUBMIT_URL, json={"code": 16, "message": "Unauthorized"}, status=401)
    with pytest.raises(ArgoError) as info:
        client.submit("grace-pipeline", {"study": "1"})
    _assert_clean(info.value, "submit WorkflowTemplate", "grace-pipeline")
    assert "token was rejected" in str(info.value)
    assert "ARGO_TOKEN / --argo-token" in str(info.value)


def test_submit_404_names_the_missing_template(mocked, client):
    mocked.post(
        SUBMIT_URL,
        json={"code": 5, "message": 'workflowtemplates.argoproj.io "grace-pipelin" not found'},
        status=404,
    )
    with pytest.raises(ArgoError) as info:
        client.submit("grace-pipelin", {})
    _assert_clean(info.value, "submit WorkflowTemplate", "grace-pipelin")
    assert "WorkflowTemplate 'grace-pipelin' was not found in namespace 'grace'" in str(info.value)


def test_retry_409_and_500(mocked, client):
    mocked.put(f"{WF_URL}/retry", json={"code": 6, "message": "the object has been modified"}, status=409)
    with pytest.raises(ArgoError) as info:
        client.retry(WF)
    _assert_clean(info.value, "retry workflow", WF)
    assert "conflict" in str(info.value)
    failed_to_retry = {"code": 2, "message": "workflow must be Failed/Error to retry"}
    mocked.replace(responses.PUT, f"{WF_URL}/retry", json=failed_to_retry, status=500)
    with pytest.raises(ArgoError) as info:
        client.retry(WF)
    _assert_clean(info.value, "retry workflow", WF)
    assert "workflow must be Failed/Error to retry" in str(info.value)


def test_connection_error_becomes_argo_error(mocked, client):
    mocked.get(WF_URL, body=requests.ConnectionError(f"Connection refused (Authorization: Bearer {TOKEN})"))
    with pytest.raises(ArgoError) as info:
        client.get(WF)
    _assert_clean(info.value, "get workflow", WF)
    assert "could not connect" in str(info.value)
    assert "ARGO_SERVER" in str(info.value)
    assert info.value.transient
    assert info.value.__cause__ is None  # its text held the token, so it is not chained


def test_connection_refused_for_real():
    c = ArgoClient("https://127.0.0.1:9", TOKEN, NS, timeout_s=5)
    with pytest.raises(ArgoError) as info:
        c.get(WF)
    text = str(info.value)
    assert TOKEN not in text and "https://127.0.0.1:9" in text and "get workflow" in text


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        c = ArgoClient(f"http://127.0.0.1:{port}", TOKEN, NS, timeout_s=0.3)
        outcome = []

        def call():
            try:
                c.get(WF)
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome.append(exc)

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(5)
        assert not worker.is_alive(), "no request timeout: the call hangs on a silent server"
    (err,) = outcome
    assert isinstance(err, ArgoError)
    assert "timed out" in str(err) and TOKEN not in str(err)
    assert err.transient


def test_ok_answer_that_is_not_a_workflow(mocked, client):
    mocked.get(WF_URL, body="<html>Sign in with SSO</html>", status=200)
    with pytest.raises(ArgoError) as info:
        client.get(WF)
    _assert_clean(info.value, "get workflow", WF)
    assert "not an Argo object" in str(info.value)


def test_repr_does_not_contain_the_token(client):
    text = repr(client)
    assert TOKEN not in text and "s3cr3t" not in text
    assert HOST in text and NS in text


# -- from_env -------------------------------------------------------------------------


def test_from_env_reads_the_argo_cli_variables(mocked, monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", "argo.example.org:2746")
    monkeypatch.setenv("ARGO_TOKEN", f"Bearer {TOKEN}")
    monkeypatch.setenv("ARGO_NAMESPACE", NS)
    c = ArgoClient.from_env()
    assert c.host == HOST
    assert c.namespace == NS
    assert c.verify_ssl is True
    mocked.get(WF_URL, json=STATUS_MIXED)
    c.get(WF)
    assert mocked.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_from_env_defaults_and_insecure(monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", "http://localhost:2746/")
    monkeypatch.setenv("ARGO_INSECURE_SKIP_VERIFY", "true")
    c = ArgoClient.from_env()
    assert c.host == "http://localhost:2746"
    assert c.namespace == "default"
    assert c.verify_ssl is False
    assert c._token is None


def test_from_env_argo_secure_false_means_http(monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", "localhost:2746")
    monkeypatch.setenv("ARGO_SECURE", "false")
    assert ArgoClient.from_env().host == "http://localhost:2746"


def test_from_env_explicit_values_win(monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", "ignored:1")
    monkeypatch.setenv("ARGO_NAMESPACE", "ignored")
    monkeypatch.setenv("ARGO_INSECURE_SKIP_VERIFY", "true")
    c = ArgoClient.from_env(host=HOST, token="t", namespace="team-b", insecure=False)
    assert (c.host, c.namespace, c.verify_ssl) == (HOST, "team-b", True)


def test_from_env_without_server_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        ArgoClient.from_env(token=TOKEN)
    assert "--argo-server" in str(info.value) and "ARGO_SERVER" in str(info.value)
    assert TOKEN not in str(info.value)


# -- wait -----------------------------------------------------------------------------


def _running(*nodes):
    return _workflow("Running", list(nodes))


def test_wait_polls_until_final_phase_and_reports_only_changes(mocked, client):
    pod_running = _node(f"{WF}-1111", "prepare", "Pod", "Running", "prepare", "2024-05-01T10:00:02Z")
    pod_done = dict(PREPARE_OK)
    dag_done = dict(DAG_RUNNING, phase="Succeeded", finishedAt="2024-05-01T10:01:00Z")
    sequence = [
        SUBMITTED,  # not picked up yet: no nodes, no update
        _running(DAG_RUNNING),  # change 1
        _running(DAG_RUNNING),  # same: no update
        _running(DAG_RUNNING, pod_running),  # change 2
        _running(DAG_RUNNING, pod_running),  # same
        _running(DAG_RUNNING, pod_done),  # change 3
        _workflow("Succeeded", [dag_done, pod_done], finished="2024-05-01T10:01:00Z"),  # change 4, final
    ]
    for body in sequence:
        mocked.get(WF_URL, json=body)
    updates = []
    phase = client.wait(WF, poll_s=0, on_update=lambda nodes: updates.append({n.name: n.phase for n in nodes}))
    assert phase == "Succeeded"
    assert len(mocked.calls) == len(sequence)
    assert updates == [
        {WF: "Running"},
        {WF: "Running", "prepare": "Running"},
        {WF: "Running", "prepare": "Succeeded"},
        {WF: "Succeeded", "prepare": "Succeeded"},
    ]


@pytest.mark.parametrize("final", ["Failed", "Error"])
def test_wait_returns_failed_phases(mocked, client, final):
    mocked.get(WF_URL, json=_running(DAG_RUNNING))
    mocked.get(WF_URL, json=_workflow(final, [QUERY_POD_FAILED], message="child failed"))
    assert client.wait(WF, poll_s=0) == final
    assert len(mocked.calls) == 2


def test_wait_survives_a_transient_server_error(mocked, client):
    mocked.get(WF_URL, json=_running(DAG_RUNNING))
    mocked.get(WF_URL, json={"code": 14, "message": "unavailable"}, status=503)
    mocked.get(WF_URL, json=_workflow("Succeeded", [PREPARE_OK]))
    assert client.wait(WF, poll_s=0) == "Succeeded"
    assert len(mocked.calls) == 3


def test_wait_gives_up_on_a_permanent_error(mocked, client):
    mocked.get(WF_URL, json=_running(DAG_RUNNING))
    mocked.get(WF_URL, json={"code": 5, "message": "not found"}, status=404)
    with pytest.raises(ArgoError) as info:
        client.wait(WF, poll_s=0)
    assert info.value.status == 404
    assert len(mocked.calls) == 2


def test_wait_times_out(mocked, client):
    mocked.get(WF_URL, json=_running(DAG_RUNNING))
    with pytest.raises(ArgoError) as info:
        client.wait(WF, poll_s=0.01, timeout_s=0.05)
    assert "still Running" in str(info.value)
    assert client.ui_link(WF) in str(info.value)
    assert len(mocked.calls) >= 2
