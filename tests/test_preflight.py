"""The preflight against recorded Kubernetes API answers (a FAKE API server): `grace-pipeline submit` and the plan step
refuse, with exit 2 and before anything runs, what would leave a pod Pending for ever or fail every step: no node for a GPU
class, the weight-cache PVC not Bound, a missing Secret, an account that may not do what the run needs. Each problem has
its own message naming the fix; what the caller may not read is reported as not checked, never guessed."""

from __future__ import annotations

import json

import httpx
import pytest
import responses
import yaml

from pipeline.cli import main
from pipeline.cluster.cluster_plan import cluster_plan
from pipeline.cluster.kube_api import KubeApi
from pipeline.cluster.placement import gpu_class, gpu_classes
from pipeline.cluster.preflight import PreflightRefused, class_scheduling, node_fits
from pipeline.cluster.workflow import render_yaml
from pipeline.config import RunConfig, example_study_path
from pipeline.registry import load_registry
from tests.fakes.fake_kube_api import NAMESPACE, FakeKubeApi, gfd_node, gke_node, node, pvc, secret, status
from tests.test_argo_api import HOST, SUBMITTED, TOKEN

TEMPLATE_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflowtemplates/grace-pipeline"
PVC_PATH = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/grace-model-cache"
MODELS = "llama-3.1-8b-instruct,gemma-2-2b-it"  # gated, one GPU of more than 22,000 / 15,000 MiB, bfloat16


def healthy_cluster() -> dict:
    """Recorded answers of a namespace where the chart is installed as the README says, with GFD-labelled GPU nodes."""
    return {
        "/api/v1/nodes": (200, {"kind": "NodeList", "items": [node("cpu-1", {}, gpus=0), gfd_node("a100-1", 40960, 8),
                                                               gfd_node("t4-1", 15360, 7)]}),
        PVC_PATH: (200, pvc("grace-model-cache", "Bound")),
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/grace-artifact-repository": (200, {"data": {"grace-s3": "s3: {}"}}),
        f"/api/v1/namespaces/{NAMESPACE}/configmaps/grace-pipeline-store": (200, {"data": {"GRACE_CHECKPOINT_STORE": "s3://b/grace-runs"}}),
        f"/api/v1/namespaces/{NAMESPACE}/secrets/grace-s3-credentials": (200, secret("grace-s3-credentials", ("accessKey", "secretKey"))),
        f"/api/v1/namespaces/{NAMESPACE}/secrets/grace-hf-token": (200, secret("grace-hf-token", ("token",))),
        f"/api/v1/namespaces/{NAMESPACE}/secrets/grace-extractor": (200, secret("grace-extractor", ("api-key",))),
        TEMPLATE_PATH: (200, yaml.safe_load(render_yaml())),
    }


@pytest.fixture
def submit_env(monkeypatch):
    monkeypatch.setenv("ARGO_SERVER", HOST)
    monkeypatch.setenv("ARGO_TOKEN", TOKEN)
    monkeypatch.setenv("ARGO_NAMESPACE", NAMESPACE)


def submit(kube, tmp_path, monkeypatch, capsys, *extra):
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig(tmp_path / "kubeconfig")))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as argo:
        argo.post(f"{HOST}/api/v1/workflows/{NAMESPACE}/submit", json=SUBMITTED)
        code = main(["submit", "-p", f"models={MODELS}", "--study-rows", "1=6,2=8", *extra])
        calls = list(argo.calls)
    out, err = capsys.readouterr()
    return code, calls, out, err


def test_a_healthy_cluster_is_submitted_to(submit_env, tmp_path, monkeypatch, capsys):
    with FakeKubeApi(healthy_cluster()) as kube:
        code, calls, out, err = submit(kube, tmp_path, monkeypatch, capsys)
    assert code == 0 and len(calls) == 1, err
    assert "preflight: checking namespace grace" in out and "check(s) passed" in out
    ssar = [(path, token) for method, path, token in kube.requests if method == "POST"]
    assert ssar and all(token == TOKEN for _, token in ssar)  # what the Argo token may do is asked as the Argo token
    assert all(token == "kube-test-token" for method, _, token in kube.requests if method == "GET")  # reads: your kubeconfig
    assert TOKEN not in out + err


REFUSALS = [
    pytest.param({"/api/v1/nodes": (200, {"items": [node("cpu-1", {}, gpus=0), gfd_node("t4-1", 15360, 7), gfd_node("v100-1", 16384, 7)]})},
                 (), ["2 problem(s)", "no schedulable node fits GPU class gpu1-22g", "needed by llama-3.1-8b-instruct",
                      "no schedulable node fits GPU class gpu1-15g", "needed by gemma-2-2b-it", "nvidia.com/gpu.compute.major > 7",
                      "t4-1 (1 GPU, nvidia.com/gpu.compute.major=7", "GPU Feature Discovery", "--no-preflight"], id="no-matching-node"),
    pytest.param({PVC_PATH: (200, pvc("grace-model-cache", "Pending", storage_class="standard", modes=("ReadWriteMany",))),
                  "/apis/storage.k8s.io/v1/storageclasses/standard": (200, {"volumeBindingMode": "Immediate"})},
                 (), ["1 problem(s)", "weight-cache PVC grace-model-cache is Pending", "storage class standard",
                      "modelCache.storageClassName"],
                 id="pvc-pending"),
    pytest.param({f"/api/v1/namespaces/{NAMESPACE}/secrets/grace-s3-credentials": status(404, 'secrets "grace-s3-credentials" not found')},
                 (), ["1 problem(s)", "Secret grace-s3-credentials", "does not exist",
                      "kubectl -n grace create secret generic grace-s3-credentials --from-literal=accessKey=<...> "
                      "--from-literal=secretKey=<...>"], id="missing-secret"),
    pytest.param({}, {("argoproj.io", "workflowtemplates", "get", NAMESPACE)},
                 ["1 problem(s)", "the Argo token (ARGO_TOKEN) may not create workflows.argoproj.io in namespace grace", "forbidden",
                  "kubectl -n grace create token grace-submitter"], id="forbidden"),
]


@pytest.mark.parametrize("answers, allowed, expected", REFUSALS)
def test_each_problem_is_refused_with_its_own_message_before_anything_is_submitted(submit_env, tmp_path, monkeypatch, capsys,
                                                                                   answers, allowed, expected):
    """Each recorded cluster has one thing wrong: it alone is refused (the count says the other checks passed)."""
    with FakeKubeApi(healthy_cluster() | answers, allowed=allowed or ("*",)) as kube:
        code, calls, out, err = submit(kube, tmp_path, monkeypatch, capsys)
    assert code == 2 and calls == []  # nothing was submitted: no pod exists
    for text in expected:
        assert text in err, (text, err)
    assert TOKEN not in out + err and "cGxhY2Vob2xkZXI=" not in out + err  # neither the token nor a Secret's value


def test_what_may_not_be_read_is_not_checked_and_not_refused(submit_env, tmp_path, monkeypatch, capsys):
    """The submitter account has no access to Secrets by design: their check says so and the run goes on."""
    answers = {f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}": status(403, f'secrets "{name}" is forbidden')
               for name in ("grace-s3-credentials", "grace-hf-token", "grace-extractor")}
    with FakeKubeApi(healthy_cluster() | answers) as kube:
        code, calls, out, err = submit(kube, tmp_path, monkeypatch, capsys)
    assert code == 0 and len(calls) == 1, err
    assert "Secret grace-s3-credentials: not checked (forbidden for kubeconfig context fake)" in out


def test_no_preflight_checks_nothing_here_nor_in_the_plan_step(submit_env, tmp_path, monkeypatch, capsys):
    with FakeKubeApi({}) as kube:  # a cluster with nothing: the preflight would refuse
        code, calls, out, err = submit(kube, tmp_path, monkeypatch, capsys, "--no-preflight")
    assert code == 0 and kube.requests == []
    assert "preflight=false" in json.loads(calls[0].request.body)["submitOptions"]["parameters"]


def test_without_kubernetes_credentials_the_plan_step_checks(submit_env, capsys):
    with responses.RequestsMock() as argo:
        argo.post(f"{HOST}/api/v1/workflows/{NAMESPACE}/submit", json=SUBMITTED)
        assert main(["submit", "-p", f"models={MODELS}", "--study-rows", "1=6,2=8"]) == 0
    assert "checked by the workflow's plan step" in capsys.readouterr().out


def test_a_wait_for_first_consumer_pvc_and_gke_nodes_pass(submit_env, tmp_path, monkeypatch, capsys):
    answers = {"/api/v1/nodes": (200, {"items": [gke_node("l4-1", "nvidia-l4"), gke_node("t4-1", "nvidia-tesla-t4")]}),
               PVC_PATH: (200, pvc("grace-model-cache", "Pending", storage_class="filestore")),
               "/apis/storage.k8s.io/v1/storageclasses/filestore": (200, {"volumeBindingMode": "WaitForFirstConsumer"})}
    with FakeKubeApi(healthy_cluster() | answers) as kube:
        code, calls, out, err = submit(kube, tmp_path, monkeypatch, capsys)
    assert code == 0 and len(calls) == 1, err
    assert "GPU class gpu1-22g: 1 node(s) fit (l4-1)" not in out  # ok findings are counted, not printed
    assert "check(s) passed" in out


@pytest.mark.parametrize("labels_of, fits", [
    pytest.param(lambda: gfd_node("a100", 40960, 8), True, id="gfd-a100"),
    pytest.param(lambda: gfd_node("t4", 15360, 7), False, id="gfd-t4-no-bf16"),
    pytest.param(lambda: gfd_node("a10g", 23028, 8), True, id="gfd-a10g"),
    pytest.param(lambda: gfd_node("l4-small", 20000, 8), False, id="gfd-too-little-memory"),
    pytest.param(lambda: gke_node("l4", "nvidia-l4"), True, id="gke-l4"),
    pytest.param(lambda: gke_node("v100", "nvidia-tesla-v100"), False, id="gke-v100-no-bf16"),
    pytest.param(lambda: node("plain", {"nvidia.com/gpu.present": "true"}), False, id="device-plugin-only"),
    pytest.param(lambda: {**gfd_node("cordoned", 81920, 8), "spec": {"unschedulable": True}}, False, id="cordoned"),
    pytest.param(lambda: {**gfd_node("tainted", 81920, 8), "spec": {"taints": [{"key": "team", "value": "x", "effect": "NoSchedule"}]}},
                 False, id="untolerated-taint"),
])
def test_which_nodes_fit_a_bfloat16_class(labels_of, fits):
    llama = load_registry()["llama-3.1-8b-instruct"]
    assert (node_fits(labels_of(), class_scheduling(gpu_class(llama))) is None) is fits


def test_a_float16_model_may_use_a_t4_and_a_node_selector_class_needs_only_its_labels():
    gemma = load_registry()["gemma-2-2b-it"]
    fp16 = gemma.model_copy(update={"dtype": "float16"})
    assert gpu_class(fp16).name == "gpu1-15g-anycc" and node_fits(gfd_node("t4", 15360, 7), class_scheduling(gpu_class(fp16))) is None
    pinned = gemma.model_copy(update={"node_selector": {"pool": "gpu"}})
    plain = node("p1", {"pool": "gpu"})
    assert node_fits(plain, class_scheduling(gpu_class(pinned))) is None  # no GFD/GKE label needed: the selector names the hardware
    assert "lacks pool=gpu" in node_fits(gfd_node("a100", 40960, 8), class_scheduling(gpu_class(pinned)))


def test_the_plan_step_refuses_before_any_gpu_pod(tmp_path, monkeypatch):
    """In the workflow the plan step checks as the workflow's ServiceAccount: no node for the class, and a ServiceAccount that
    may not write Argo's task results, are each refused (exit 2) before a plan file is written."""
    config = RunConfig(studies={2: example_study_path(2)}, models=("gemma-2-2b-it",), row_limit=1, store=str(tmp_path / "store"))
    classes = gpu_classes(load_registry().values())
    monkeypatch.setenv("HF_TOKEN", "hf-test")  # gemma-2-2b-it is gated: a FAKE hub grants it
    hub = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    answers = healthy_cluster() | {"/api/v1/nodes": (200, {"items": [gfd_node("t4-1", 15360, 7)]})}
    with FakeKubeApi(answers) as kube:
        api = KubeApi(kube.url, "workflow-sa-token", namespace=NAMESPACE, where="this pod's ServiceAccount")
        with pytest.raises(PreflightRefused, match="no schedulable node fits GPU class gpu1-15g") as refused:
            cluster_plan(config, tmp_path / "plan", http=hub, template_classes=classes, check_cluster=True, kube=api)
        assert refused.value.exit_code == 2 and not (tmp_path / "plan").exists()
    with FakeKubeApi(healthy_cluster(), allowed={("argoproj.io", "workflowtaskresults", "patch", NAMESPACE)}) as kube:
        api = KubeApi(kube.url, "workflow-sa-token", namespace=NAMESPACE, where="this pod's ServiceAccount")
        with pytest.raises(PreflightRefused, match="this pod's ServiceAccount may not create workflowtaskresults.argoproj.io"):
            cluster_plan(config.model_copy(update={"models": ("gemma-3-270m",)}), tmp_path / "plan2", template_classes=classes,
                         check_cluster=True, kube=api)


def test_an_unreachable_api_server_is_said_once_and_refuses_nothing(submit_env, tmp_path, monkeypatch, capsys):
    with FakeKubeApi({}) as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(config))  # the server is gone: connections are refused
    with responses.RequestsMock() as argo:
        argo.post(f"{HOST}/api/v1/workflows/{NAMESPACE}/submit", json=SUBMITTED)
        assert main(["submit", "-p", f"models={MODELS}", "--study-rows", "1=6,2=8"]) == 0
    out = capsys.readouterr().out
    assert out.count("did not answer") == 1 and "preflight: nothing checked" in out
