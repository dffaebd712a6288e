"""The Argo WorkflowTemplate: Hera round trip, strict schema, the project's own DAG checks, and every
step's container command run as the workflow invokes it (FAKE Argo executor, REAL S3 bucket, FAKE
vLLM sidecars, FAKE Hugging Face hub). Argo's own CRD schemas: tests/test_argo_crds.py."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml
from hera.workflows import WorkflowTemplate
from hera.workflows import models as m

from pipeline.cluster.placement import gpu_class, gpu_classes
from pipeline.cluster.workflow import (
    EXTRACTION_MUTEX,
    HF_SECRET,
    KEY_PREFIX,
    MODEL_CACHE_PVC,
    PARAMETERS,
    S3_SECRET,
    TEMPLATE_NAME,
    render_yaml,
)
from pipeline.plan import SERVED_STAGES, STAGE_DEPENDENCIES
from pipeline.registry import load_registry
from steps.store import open_store
from steps.tables import read_table
from tests.fakes.argo_executor import FakeArgo, _depends_targets
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.human_data import write_human2
from tests.s3_server import ACCESS_KEY, SECRET_KEY

ARGO_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")
PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")


@pytest.fixture(scope="module")
def rendered() -> dict:
    return yaml.safe_load(render_yaml())


def _strict(schema):
    """Hera's JSON Schema with additionalProperties: false on every object, so unknown fields fail."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def test_hera_round_trip(rendered):
    assert WorkflowTemplate.from_dict(rendered).to_dict() == rendered


def test_validates_against_a_strict_schema_from_heras_models(rendered):
    schema = _strict(m.WorkflowTemplate.model_json_schema(by_alias=True))
    jsonschema.validate(rendered, schema)
    broken = json.loads(json.dumps(rendered))
    broken["spec"]["templates"][0]["container"]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _expressions(obj) -> set[str]:
    return set(re.findall(r"\{\{([^{}]+)\}\}", json.dumps(obj)))


def check_template(workflow: dict) -> list[str]:
    """The project's own checks of a rendered WorkflowTemplate; returns the problems found."""
    spec, problems = workflow["spec"], []
    templates = {t["name"]: t for t in spec["templates"]}
    parameters = {p["name"] for p in spec["arguments"]["parameters"]}
    if spec["entrypoint"] not in templates:
        problems.append(f"entrypoint {spec['entrypoint']} is not a template")
    for template in spec["templates"]:
        if not ARGO_NAME.match(template["name"]) or len(template["name"]) > 128:
            problems.append(f"template name {template['name']!r}")
        inputs = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        for name in [p["name"] for p in template.get("inputs", {}).get("parameters", [])] + \
                [a["name"] for a in template.get("inputs", {}).get("artifacts", []) + template.get("outputs", {}).get("artifacts", [])]:
            if not PARAM_NAME.match(name):
                problems.append(f"{template['name']}: parameter/artifact name {name!r}")
        for expression in _expressions(template):
            if expression.startswith("inputs.parameters.") and expression.removeprefix("inputs.parameters.") not in inputs:
                problems.append(f"{template['name']} uses undeclared input {expression}")
            if expression.startswith("workflow.parameters.") and expression.removeprefix("workflow.parameters.") not in parameters:
                problems.append(f"{template['name']} uses unknown workflow parameter {expression}")
        if "dag" not in template:
            continue
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        for task in tasks.values():
            if not ARGO_NAME.match(task["name"]):
                problems.append(f"task name {task['name']!r}")
            if task["template"] not in templates:
                problems.append(f"task {task['name']} references missing template {task['template']}")
                continue
            missing = [d for d in _depends_targets(task.get("depends", "")) if d not in tasks]
            problems += [f"task {task['name']} depends on missing task {d}" for d in missing]
            given = {p["name"] for p in task.get("arguments", {}).get("parameters", [])}
            wanted = {p["name"] for p in templates[task["template"]].get("inputs", {}).get("parameters", [])}
            if given != wanted:
                problems.append(f"task {task['name']}: arguments {sorted(given)} != template inputs {sorted(wanted)}")
            for expression in _expressions(task):
                if expression.startswith("tasks."):
                    source, _, _, output = expression.split(".", 4)[1:]
                    outputs = {p["name"] for p in templates[tasks[source]["template"]].get("outputs", {}).get("parameters", [])}
                    if output not in outputs or source not in _depends_targets(task.get("depends", "")):
                        problems.append(f"task {task['name']} reads {expression} without depending on it")
        order, visiting = [], set()

        def visit(name):
            if name in order:
                return
            if name in visiting:
                problems.append(f"cycle through {name}")
                return
            visiting.add(name)
            for d in _depends_targets(tasks[name].get("depends", "")):
                if d in tasks:
                    visit(d)
            order.append(name)
        for name in tasks:
            visit(name)
    return problems


def _main(workflow: dict) -> dict:
    return next(t for t in workflow["spec"]["templates"] if t["name"] == "main")


def test_own_checks_pass_and_catch_broken_templates(rendered):
    assert check_template(rendered) == []
    broken = json.loads(json.dumps(rendered))
    dag = _main(broken)["dag"]["tasks"]
    dag[1]["depends"] = "plan && nowhere"
    dag[0]["depends"] = dag[-1]["name"]  # plan after report: a cycle
    dag[2]["template"] = "missing"
    broken["spec"]["templates"][0]["container"]["args"].append("{{inputs.parameters.nope}}")
    broken["spec"]["entrypoint"] = "nope"
    problems = "\n".join(check_template(broken))
    for expected in ("depends on missing task nowhere", "cycle", "missing template missing", "undeclared input", "entrypoint nope"):
        assert expected in problems


def test_dag_mirrors_the_local_plan(rendered):
    """One model = serve (every served stage of plan.py, one server) -> the stages that depend on them; then the study stages."""
    templates = {t["name"]: t for t in rendered["spec"]["templates"]}
    tasks = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    model_tasks = [n for n, t in tasks.items() if "dag" in templates[t["template"]]] + ["extract-only"]
    assert set(model_tasks) == {*(c.name for c in gpu_classes(load_registry().values())), "endpoint", "extract-only"}
    for name in model_tasks[:-1]:
        model_dag = {t["name"]: t for t in templates[tasks[name]["template"]]["dag"]["tasks"]}
        serve_args = templates[model_dag["serve"]["template"]]["container"]["args"]
        assert serve_args[0] == "serve" and serve_args[serve_args.index("--stages") + 1] == ",".join(SERVED_STAGES)
        for stage, after in STAGE_DEPENDENCIES.items():
            if stage not in SERVED_STAGES:  # extraction waits only for its model's serve step
                assert set(after) <= set(SERVED_STAGES) and model_dag[stage]["depends"] == "serve"
        assert tasks[name]["withParam"] == f"{{{{tasks.plan.outputs.parameters.{name}}}}}"
    assert set(_depends_targets(tasks["validate"]["depends"])) == {"plan", *model_tasks}
    for stage in ("validate", "merge", "fit", "report"):  # partial results: however each model task ENDED (Errored: evicted, retries spent)
        for task in model_tasks:
            assert f"({task}.Succeeded || {task}.Skipped || {task}.Failed || {task}.Errored)" in tasks[stage]["depends"], (stage, task)
    for stage, after in (("merge", "validate"), ("fit", "merge"), ("report", "validate"), ("report", "merge"), ("report", "fit")):
        # a failed or errored one blocks none
        assert f"({after}.Succeeded || {after}.Skipped || {after}.Failed || {after}.Errored)" in tasks[stage]["depends"]
    assert tasks["validate"]["depends"].startswith("plan && ")  # a failed plan step still stops everything
    # ... and any failure fails the workflow: Argo judges a DAG by its target tasks
    assert set(_main(rendered)["dag"]["target"].split()) == {*model_tasks, "validate", "merge", "fit", "report"}
    assert templates["main"]["dag"]["failFast"] is False
    assert rendered["metadata"]["name"] == TEMPLATE_NAME


def test_gpu_steps_have_fixed_resources_placement_and_the_weight_cache(rendered):
    templates = {t["name"]: t for t in rendered["spec"]["templates"]}
    for gpu in gpu_classes(load_registry().values()):
        serve = templates[f"serve-{gpu.name}"]
        (vllm,) = serve["sidecars"]
        assert vllm["resources"]["limits"] == {"nvidia.com/gpu": str(gpu.gpus)}  # a literal quantity, per template
        assert vllm["resources"]["requests"]["nvidia.com/gpu"] == str(gpu.gpus) and "ephemeral-storage" in vllm["resources"]["requests"]
        assert vllm["image"].startswith("vllm/vllm-openai:v") and "latest" not in vllm["image"]
        env = {e["name"]: e for e in vllm["env"]}
        assert env["HF_HOME"]["value"].startswith("/models/") and env["VLLM_CACHE_ROOT"]["value"].startswith("/models/")
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": HF_SECRET[0], "key": HF_SECRET[1], "optional": True}
        volumes = {v["name"]: v for v in serve["volumes"]}
        assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": MODEL_CACHE_PVC}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": gpu.shm_size}
        gfd, gke = serve["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert gfd["matchExpressions"] == [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": [str(gpu.min_gpu_memory_mib)]},
                                           {"key": "nvidia.com/gpu.compute.major", "operator": "Gt", "values": ["7"]}]  # bf16: cc >= 8
        (accelerators,) = gke["matchExpressions"]
        assert accelerators["key"] == "cloud.google.com/gke-accelerator" and accelerators["operator"] == "In"
        assert "nvidia-tesla-t4" not in accelerators["values"] and "nvidia-tesla-v100" not in accelerators["values"]  # 7.x: no bf16
        assert "nvidia-h100-80gb" in accelerators["values"]
        assert serve["timeout"] == "{{inputs.parameters.timeout}}"  # the deadline: the bound on time spent Pending
        assert serve["tolerations"][0]["key"] == "nvidia.com/gpu" and "podSpecPatch" not in serve
        assert "nvidia.com/gpu" not in json.dumps(serve["container"])  # the sidecar holds the GPUs
        args = serve["container"]["args"]
        assert args[args.index("--vllm-dir") + 1] == "/grace/vllm"
        assert {o["name"] for o in serve["outputs"]["artifacts"]} == {"exp1", "exp2", "vllm-log"}
    assert "sidecars" not in templates["serve-on-endpoint"] and "volumes" not in templates["serve-on-endpoint"]
    assert "persistentVolumeClaim" not in json.dumps(rendered["spec"]["volumes"])  # a CPU-only run needs no weight cache


def test_big_models_never_land_on_small_gpus():
    registry = load_registry()
    for name, at_least in (("gemma-2-27b-it", 40_000), ("llama-3.1-70b-instruct", 78_000)):
        gpu = gpu_class(registry[name])
        assert gpu.min_gpu_memory_mib >= at_least and gpu.gpus == registry[name].gpus


def test_extraction_mutex_artifacts_retries_logs_and_secrets(rendered):
    templates = {t["name"]: t for t in rendered["spec"]["templates"]}
    assert templates["extract"]["synchronization"] == {"mutexes": [{"name": EXTRACTION_MUTEX}]}
    assert rendered["spec"]["artifactRepositoryRef"] == {"configMap": "grace-artifact-repository", "key": "grace-s3"}
    assert rendered["spec"]["archiveLogs"] is True
    assert rendered["spec"]["volumes"] == [{"name": "work", "emptyDir": {"sizeLimit": "4Gi"}}]
    for template in templates.values():
        for artifact in template.get("inputs", {}).get("artifacts", []) + template.get("outputs", {}).get("artifacts", []):
            assert set(artifact["s3"]) == {"key"} and artifact["s3"]["key"].startswith(f"{KEY_PREFIX}/{{{{inputs.parameters.run-id}}}}/")
            assert artifact["archive"] == {"none": {}}
        if "container" in template:
            retry = template["retryStrategy"]
            assert "in [4, 6, 7, 137, 143]" in retry["expression"] and retry["backoff"] == {"duration": "1m", "factor": "2"}
            assert "maxDuration" not in json.dumps(retry)  # a deadline across all attempts: it would forbid retrying long steps
            assert "ephemeral-storage" in template["container"]["resources"]["requests"]
            env = {e["name"]: e for e in template["container"]["env"]}
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": S3_SECRET[0], "key": S3_SECRET[2]}
            assert all("value" not in e or e["name"] == "PYTHONUNBUFFERED" for e in env.values())
            assert template["container"]["securityContext"]["runAsNonRoot"] is True
            assert ("DEEPSEEK_API_KEY" in env) == (template["name"] == "extract")  # each secret only where it is used
            assert ("GRACE_ENDPOINT_API_KEY" in env) == template["name"].startswith("serve")
            assert ("HF_TOKEN" in env) == (template["name"] == "plan")
    text = render_yaml()
    assert "secretKey:" not in text.replace("key: secretKey", "") and "endpoint:" not in text and "bucket:" not in text


OLD_VLLM_SIDECAR = {  # the sidecar as rendered before issue 20: root (the image's default user), no securityContext
    "name": "vllm", "image": "vllm/vllm-openai:v0.11.0", "command": ["bash", "-c", "..."],
    "env": [{"name": "HF_HOME", "value": "/models/huggingface"}, {"name": "VLLM_CACHE_ROOT", "value": "/models/vllm"}],
    "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
    "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "work", "mountPath": "/grace"},
                     {"name": "model-cache", "mountPath": "/models"}]}


def test_every_pod_meets_pod_security_restricted_and_the_old_sidecar_did_not(rendered):
    """Namespaces enforcing Pod Security `restricted` (and OpenShift's restricted-v2) admit every pod of the template: checked
    offline by tests/pod_security.py, which fails on the sidecar and pod settings the template had before."""
    import copy

    from tests.pod_security import restricted_problems, template_pods, workflow_problems

    pods = dict(template_pods(rendered))
    assert {"plan", "extract", "validate", "merge", "report", "serve-on-endpoint", "serve-gpu1-22g"} <= set(pods)
    assert workflow_problems(rendered) == {}
    pod_security = rendered["spec"]["securityContext"]
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"} and pod_security["runAsNonRoot"] is True
    assert pod_security["fsGroupChangePolicy"] == "OnRootMismatch"  # a large weight cache is not re-chowned at every start
    (vllm,) = pods["serve-gpu1-22g"]["containers"][1:]
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert vllm["securityContext"]["runAsUser"] != 0 and env["HOME"].startswith("/grace/")  # non-root, HOME in the work emptyDir
    assert all(env[k].startswith("/models/") for k in ("HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"))

    old = copy.deepcopy(rendered)
    for template in old["spec"]["templates"]:
        if template.get("sidecars"):
            template["sidecars"] = [OLD_VLLM_SIDECAR]
    problems = workflow_problems(old)
    assert set(problems) == {t["name"] for t in old["spec"]["templates"] if t.get("sidecars")}  # only the GPU steps, by their sidecar
    found = "\n".join(problems["serve-gpu1-22g"])
    for rule in ("vllm: allowPrivilegeEscalation must be false", "vllm: capabilities must drop ALL"):
        assert rule in found
    old["spec"]["securityContext"] = {"fsGroup": 10001}  # and the pod as it was: no seccomp profile, root allowed
    found = "\n".join(restricted_problems(dict(template_pods(old))["plan"]))
    assert "seccompProfile must be RuntimeDefault or Localhost" in found
    assert "runAsNonRoot must be true" not in found  # the steps' own container always was non-root
    assert "vllm: runAsNonRoot must be true" in "\n".join(restricted_problems(dict(template_pods(old))["serve-gpu1-22g"]))


@pytest.mark.parametrize("status, exit_code, message, retried", [
    pytest.param("Failed", "-1", "Pod was rejected: Allocate failed due to device plugin error", True, id="admission-error"),
    pytest.param("Failed", "-1", "The node was low on resource: memory.", True, id="evicted"),
    pytest.param("Failed", "-1", "timeout", False, id="pending-past-its-deadline"),
    pytest.param("Error", "-1", "pod deleted", True, id="argo-error"),
    pytest.param("Failed", "4", "", True, id="model-server"),
    pytest.param("Failed", "137", "", True, id="killed"),
    pytest.param("Failed", "2", "", False, id="bad-input"),
    pytest.param("Failed", "3", "", False, id="too-many-failed-rows"),
    pytest.param("Failed", "5", "", False, id="broken-outputs"),
])
def test_the_retry_expression(rendered, status, exit_code, message, retried):
    """Argo sets lastRetry.exitCode to "-1" when the main container never ran: such a pod is retried, unless it timed out."""
    from tests.fakes.argo_executor import retry_decision

    expressions = {t["retryStrategy"]["expression"] for t in rendered["spec"]["templates"] if "container" in t}
    assert len(expressions) == 1
    assert retry_decision(expressions.pop(), status, exit_code, message) is retried


def test_parameters_show_in_the_ui_with_descriptions_and_enums(rendered):
    shown = {p["name"]: p for p in rendered["spec"]["arguments"]["parameters"]}
    assert set(shown) == {p.name for p in PARAMETERS}
    assert all(p.get("description") for p in shown.values())
    assert shown["scoring"]["enum"] == ["exact", "first-token", "seed-literal"] and shown["scoring"]["value"] == "exact"
    assert shown["registry"]["value"] == ""  # empty: the shipped registry
    assert shown["studies"]["enum"][0] == shown["studies"]["value"] == "1,2"
    for name in ("models", "studies", "limit", "replications", "scoring", "extractor-url", "extractor-model", "concurrency"):
        assert name in shown


# ---- every step's container command, run as the workflow invokes it ---------------------

HF_TOKEN = "hf-test-token"


@pytest.fixture
def repository(s3_env):
    """The artifact repository bucket, as the test process (Argo's executor) sees it."""
    return open_store("s3://grace")


@pytest.fixture
def cluster(s3):
    """Secrets and ConfigMaps as the chart and the README's kubectl commands create them (a FAKE hub for the HF check)."""
    from tests.fakes.fake_hub import FakeHub

    gated = {m.hf_id for m in load_registry().values() if m.gated}
    with FakeHub(HF_TOKEN, granted=gated) as hub:
        secrets = {(S3_SECRET[0], S3_SECRET[1]): ACCESS_KEY, (S3_SECRET[0], S3_SECRET[2]): SECRET_KEY,
                   ("grace-extractor", "api-key"): "test-extractor-key", HF_SECRET: HF_TOKEN}
        configmaps = {"grace-pipeline-store": {"GRACE_CHECKPOINT_STORE": f"s3://grace/{KEY_PREFIX}", "AWS_ENDPOINT_URL": s3.endpoint,
                                               "AWS_REGION": "us-east-1", "HF_ENDPOINT": hub.url}}
        yield secrets, configmaps, hub


def _failures(argo) -> str:
    return "\n\n".join(f"{p.node}: {p.exit_code}\n{p.output[-3000:]}" for p in argo.pods if p.exit_code)


THREE = "llama-3.1-8b-instruct,gemma-2-27b-it,gemma-2-2b-it"  # 1 GPU, tensor-parallel 2, another GPU class


def test_three_models_each_loaded_once_then_a_resubmit_loads_nothing_and_a_failed_validation_fails_the_workflow(
        rendered, cluster, repository, tmp_path):
    secrets, configmaps, hub = cluster
    repository.write_bytes("inputs/speaker_production.csv", write_human2(tmp_path / "h2.csv").read_bytes())
    # a researcher's registry in the bucket: 'acme-chat' exists only there, served under another name (without
    # --registry in every step it would be requested as 'acme-chat' and the server would refuse it)
    repository.write_bytes("inputs/my-models.yaml", b"models:\n  - {name: acme-chat, hf_id: acme/chat-7b, served_name: fake-model}\n")
    with FakeOpenAIServer() as shared:
        parameters = {"models": f"{THREE},acme-chat", "endpoints": f"acme-chat={shared.url}", "limit": "3", "fit-resamples": "10",
                      "registry": "s3://grace/inputs/my-models.yaml", "human2": "s3://grace/inputs/speaker_production.csv",
                      "extractor-url": shared.url, "extractor-model": "fake-model", "run-id": "cluster-test"}
        argo = FakeArgo(rendered, parameters, repository, secrets, configmaps, tmp_path / "first")
        assert argo.run() == "Succeeded", _failures(argo)
        starts = [served for served, _ in argo.vllm_starts]
        registry = load_registry()
        for name in THREE.split(","):
            assert starts.count(registry[name].request_model) == 1, (name, starts)  # ONE vLLM start per model, both studies
        (tp2,) = [args for served, args in argo.vllm_starts if served == registry["gemma-2-27b-it"].request_model]
        assert tp2[tp2.index("--tensor-parallel-size") + 1] == "2" and tp2[tp2.index("--model") + 1] == "google/gemma-2-27b-it"
        assert sorted(hub.requests) == sorted(f"/api/models/{registry[n].hf_id}/auth-check" for n in THREE.split(","))

        nodes = set(argo.nodes)
        assert {"gpu1-22g(0:llama-3.1-8b-instruct).serve", "gpu2-40g(0:gemma-2-27b-it).extract", "gpu1-15g(0:gemma-2-2b-it).serve",
                "endpoint(0:acme-chat).serve", "validate(0:1)", "merge(1:2)", "report"} <= nodes
        assert max(len(n) for n in nodes) < 60  # readable, not the JSON of an item
        ran = [p.task for p in argo.pods]
        assert ran.count("serve") == 4 and ran.count("extract") == 4 and ran.count("plan") == 1
        for pod in argo.pods:
            if pod.task == "serve":  # Argo's self-reported progress: every row of both studies, both served stages
                done, total = pod.progress.split("/")
                assert int(done) == int(total) == 2 * (3 + 3)
        run = repository.child(KEY_PREFIX, "cluster-test")
        for study in (1, 2):
            analysis = read_table(run, f"analysis/study{study}_analysis")
            assert set(analysis.model_name) == {*THREE.split(","), "acme-chat"} and len(analysis) == 12
            assert (analysis.query_status == "ok").all()
        assert run.exists("report.html") and run.exists("manifest.json")
        human = json.loads(run.read_bytes("manifest.json"))["human_data"]["2"]  # validated by the plan step, hash recorded
        assert human["path"] == "s3://grace/inputs/speaker_production.csv" and human["trials"] == 600 and len(human["sha256"]) == 64
        comparison = read_table(run, "comparison/human_model_comparison")  # written by the report step, uploaded by Argo
        people = comparison[(comparison.source == "human") & (comparison.goal == "informational") & (comparison.state == 0)]
        assert people.set_index("option").value["It was terrible"] == pytest.approx(0.58)
        assert "600 trials from 50 participants" in run.read_bytes("report.html").decode()
        fits = read_table(run, "fits/study2_rsa_parameters")  # the fit step after merge: humans and every model, in the bucket
        assert "human" in set(fits.source) and set(fits.model.dropna()) == {*THREE.split(","), "acme-chat"}
        assert "Study 2: the paper's model (Yoon" in run.read_bytes("report.html").decode()
        assert b"FAKE vLLM serving" in run.read_bytes("logs/gemma-2-27b-it/vllm.log")  # the sidecar's log is kept
        assert any(k.startswith("checkpoints/exp1/llama-3.1-8b-instruct_study1/part-") for k in run.list("checkpoints"))
        for pod in argo.pods:
            assert SECRET_KEY not in pod.output and "test-extractor-key" not in pod.output and HF_TOKEN not in pod.output
        plan_log = next(p.output for p in argo.pods if p.task == "plan")
        assert "Cost model" in plan_log and "gemma-2-27b-it" in plan_log

        # Re-submit the same run with one probability broken in the store: every (model, study) is complete, so
        # nothing is served or extracted again; validation catches the broken value and the workflow ends Failed,
        # after merge and report were written.
        key = "exp2/gemma-2-2b-it_study2_probabilities.parquet"
        table = read_table(run, key.removesuffix(".parquet"))
        table.loc[0, "prob_was"] = 0.9
        table.loc[0, "prob_wasnt"] = 0.9
        buffer = __import__("io").BytesIO()
        table.to_parquet(buffer, index=False)
        run.write_bytes(key, buffer.getvalue())
        for key in ("report.html", "analysis/study2_analysis.parquet", "structured/gemma-2-27b-it_study1_structured.parquet"):
            run.delete(key)  # ... and one model's extraction is missing: only that extraction runs again
        again = FakeArgo(rendered, parameters, repository, secrets, configmaps, tmp_path / "again")
        assert again.run() == "Failed"
    assert again.vllm_starts == [] and [p.node for p in again.pods if p.task in ("serve", "extract", "extract-only")] == [
        "extract-only(0:gemma-2-27b-it)"]
    assert run.exists("structured/gemma-2-27b-it_study1_structured.parquet")
    assert again.nodes["validate(1:2)"] == "Failed" and again.nodes["validate(0:1)"] == "Succeeded"
    assert again.nodes["merge(1:2)"] == again.nodes["report"] == "Succeeded"
    assert "gemma-2-2b-it" in next(p.output for p in again.pods if p.node == "validate(1:2)")
    assert "complete, nothing to do" in next(p.output for p in again.pods if p.task == "plan")
    assert run.exists("report.html") and run.exists("analysis/study2_analysis.parquet")


def test_the_readmes_registry_example_runs_on_the_cluster(rendered, cluster, repository, tmp_path):
    """README "Adding models without code": my_models.yaml as the workflow's `registry` parameter reaches the plan step's GPU
    placement, the serve step's vLLM arguments (hf_id, max_model_len) and every later step (it used to end in KeyError: 'gpu1')."""
    from tests.readme_examples import readme_registry, readme_registry_models

    secrets, configmaps, hub = cluster
    repository.write_bytes("inputs/my_models.yaml", readme_registry().encode())
    (name,) = readme_registry_models()
    with FakeOpenAIServer() as extractor:
        argo = FakeArgo(rendered, {"models": name, "registry": "s3://grace/inputs/my_models.yaml", "studies": "2", "limit": "2",
                                   "extractor-url": extractor.url, "extractor-model": "fake-model", "run-id": "readme-registry"},
                        repository, secrets, configmaps, tmp_path)
        assert argo.run() == "Succeeded", _failures(argo)
    ((served, args),) = argo.vllm_starts
    pairs = dict(zip(args[::2], args[1::2]))
    assert served == pairs["--model"] == "Qwen/Qwen2.5-7B-Instruct" and pairs["--max-model-len"] == "8192"
    assert f"gpu1-15g(0:{name}).serve" in argo.nodes and not hub.requests  # not gated: no hub check
    run = repository.child(KEY_PREFIX, "readme-registry")
    analysis = read_table(run, "analysis/study2_analysis")
    assert set(analysis.model_name) == {name} and len(analysis) == 2 and (analysis.query_status == "ok").all()
    assert run.exists("report.html")


class _DeadSidecar:
    """A FAKE vLLM sidecar that exits while loading (out of GPU memory, a gated model without access): exit code 1."""

    def __init__(self, vllm_dir):
        (vllm_dir / "vllm.log").write_text("FAKE vLLM: torch.OutOfMemoryError: CUDA out of memory\n")
        (vllm_dir / "exit-code").write_text("1\n")

    def stop(self):
        pass


def test_one_of_three_models_failing_leaves_the_others_merged_and_reported(rendered, cluster, repository, tmp_path):
    """Issue 20: a model whose vLLM server cannot load (retried, then Failed) no longer omits validate, merge and report: the
    two others are merged and reported, the report and run_summary.json name the failed one and why, the workflow ends Failed."""
    from tests.fakes.argo_executor import fake_vllm

    secrets, configmaps, _ = cluster
    failing = "gemma-2-9b-it"
    registry = load_registry()

    def sidecar(served, port, vllm_dir):
        return _DeadSidecar(vllm_dir) if served == registry[failing].request_model else fake_vllm(served, port, vllm_dir)

    models = ["llama-3.1-8b-instruct", failing, "gemma-2-2b-it"]
    with FakeOpenAIServer() as extractor:
        argo = FakeArgo(rendered, {"models": ",".join(models), "studies": "2", "limit": "2", "run-id": "one-fails",
                                   "extractor-url": extractor.url, "extractor-model": "fake-model", "gpu-pending-minutes": "30"},
                        repository, secrets, configmaps, tmp_path, sidecar_factory=sidecar)
        assert argo.run() == "Failed"  # the failed model task is a target: the run still fails
    serve_pods = [p for p in argo.pods if p.node == f"gpu1-22g(1:{failing}).serve"]
    assert len(serve_pods) == 4 and all(p.exit_code == 4 for p in serve_pods)  # exit 4: retried 3 times, then Failed
    assert argo.nodes[f"gpu1-22g(1:{failing}).serve"] == "Failed" and f"gpu1-22g(1:{failing}).extract" not in argo.nodes
    assert argo.nodes["validate(0:2)"] == argo.nodes["merge(0:2)"] == argo.nodes["report"] == "Succeeded"
    run = repository.child(KEY_PREFIX, "one-fails")
    analysis = read_table(run, "analysis/study2_analysis")
    assert set(analysis.model_name) == {"llama-3.1-8b-instruct", "gemma-2-2b-it"} and (analysis.query_status == "ok").all()
    summary = json.loads(run.read_bytes("run_summary.json"))
    assert {r["model"] for r in summary["failed"]} == {failing} and summary["missing"] == []
    assert {r["stage"] for r in summary["failed"]} == {"query", "probabilities"}  # the served nodes of its one serve step
    assert all("exited with code 1 while loading google/gemma-2-9b-it" in r["error"] for r in summary["failed"])
    report = run.read_bytes("report.html").decode()
    assert "Not finished" in report and failing in report.split("Not finished")[1].split("</ul>")[0]
    assert f"not finished: query of {failing}, study 2" in next(p.output for p in argo.pods if p.task == "report")
    validation = json.loads(run.read_bytes("validation/study2_validation.json"))
    assert validation["models_without_tables"] == [failing] and validation["passed"]
    # every GPU step got its deadline from the plan step: the pending allowance plus a bound on its run
    deadlines = {p.timeout for p in argo.pods if p.task == "serve"}
    assert None not in deadlines and all(30 * 60 < int(d[:-1]) < 24 * 3600 for d in deadlines)


def test_a_gated_model_without_access_stops_the_run_before_any_gpu(rendered, cluster, repository, tmp_path):
    secrets, configmaps, hub = cluster
    hub.granted.discard("meta-llama/Llama-3.1-8B-Instruct")
    argo = FakeArgo(rendered, {"models": "llama-3.1-8b-instruct,gemma-2-2b-it", "limit": "2"}, repository, secrets, configmaps, tmp_path)
    assert argo.run() == "Failed"
    (plan,) = argo.pods  # no GPU pod was started
    assert plan.exit_code == 2 and "llama-3.1-8b-instruct" in plan.output and HF_SECRET[0] in plan.output
    assert "gemma-2-2b-it" not in plan.output.split("cannot be downloaded")[1] and HF_TOKEN not in plan.output


def test_the_plan_steps_preflight_refuses_before_any_gpu_pod(rendered, cluster, repository, tmp_path):
    """Submitted from the Argo UI (no laptop preflight): the plan step checks the cluster as the workflow's ServiceAccount and
    refuses (exit 2, not retried) when no node fits a GPU class, so no GPU pod is left Pending."""
    from tests.fakes.fake_kube_api import FakeKubeApi, gfd_node, pvc

    secrets, configmaps, _ = cluster
    answers = {"/api/v1/nodes": (200, {"items": [gfd_node("t4-1", 15360, 7)]}),
               "/api/v1/namespaces/grace/persistentvolumeclaims/grace-model-cache": (200, pvc("grace-model-cache", "Bound"))}
    with FakeKubeApi(answers) as kube:
        pod_env = {**configmaps["grace-pipeline-store"], "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig"))}
        argo = FakeArgo(rendered, {"models": "gemma-2-2b-it", "limit": "1", "studies": "2"}, repository, secrets,
                        {**configmaps, "grace-pipeline-store": pod_env}, tmp_path)
        assert argo.run() == "Failed"
    (plan,) = argo.pods  # no GPU pod was started, and the plan step was not retried
    assert plan.exit_code == 2 and "no schedulable node fits GPU class gpu1-15g" in plan.output and "t4-1" in plan.output
    assert [m for m, path, _ in kube.requests if path == "/api/v1/nodes"] == ["GET"]


def test_bad_human_file_fails_the_plan_step(rendered, cluster, repository, tmp_path):
    secrets, configmaps, _ = cluster
    repository.write_bytes("inputs/bad_human.csv", b'"subid","trial","item","goal","true_state","positivity","utterance"\n'
                                                   b'"a",1,"poem","social","heart7","neg","good"\n')
    argo = FakeArgo(rendered, {"human2": "s3://grace/inputs/bad_human.csv"}, repository, secrets, configmaps, tmp_path)
    assert argo.run() == "Failed"
    (plan,) = argo.pods  # no GPU step was started
    assert plan.task == "plan" and plan.exit_code == 2
    assert "s3://grace/inputs/bad_human.csv" in plan.output and "column 'true_state'" in plan.output


def test_bad_input_fails_the_plan_step_without_retry(rendered, cluster, repository, tmp_path):
    secrets, configmaps, _ = cluster
    repository.write_bytes("inputs/broken.csv", b"participant_id,story_shortname\n1,exam\n")
    argo = FakeArgo(rendered, {"study1": "s3://grace/inputs/broken.csv", "studies": "1"}, repository, secrets, configmaps, tmp_path)
    assert argo.run() == "Failed"
    (plan,) = argo.pods
    assert plan.task == "plan" and plan.exit_code == 2 and "s3://grace/inputs/broken.csv" in plan.output
    assert "required column" in plan.output
    retry = next(t for t in rendered["spec"]["templates"] if t["name"] == "plan")["retryStrategy"]["expression"]
    assert "2" not in re.findall(r"\d+", retry.split("in", 1)[1])


def _model_task(rendered, name: str) -> dict:
    return next(t for t in _main(rendered)["dag"]["tasks"] if t["name"] == name)


def test_a_dead_sidecar_fails_the_step_in_seconds_and_the_retry_resumes(rendered, cluster, repository, tmp_path):
    """The first vLLM sidecar dies mid-run (process gone: its exit code is written, the port closes); the step notices
    within seconds, exits 4 naming the model, and Argo's retry starts a new pod whose sidecar lives."""
    import time

    from tests.fakes.argo_executor import fake_vllm

    secrets, configmaps, _ = cluster
    started, deaths = [], []

    def dying_then_healthy(served, port, vllm_dir):
        server = fake_vllm(served, port, vllm_dir)
        started.append(server)
        if len(started) == 1:
            server.latency_ms = 200  # slow enough to be mid-run when it dies

            def die():
                time.sleep(1.5)
                server.stop()
                (vllm_dir / "exit-code").write_text("137\n")
                deaths.append(time.monotonic())
            __import__("threading").Thread(target=die, daemon=True).start()
        return server

    argo = FakeArgo(rendered, {"models": "llama-3.1-8b-instruct", "studies": "2", "limit": "8", "run-id": "dead-sidecar",
                               "extractor-url": "http://127.0.0.1:9", "concurrency": "1"},
                    repository, secrets, configmaps, tmp_path, sidecar_factory=dying_then_healthy)
    argo._run_task(_model_task(rendered, "plan"), {})
    template = next(t for t in rendered["spec"]["templates"] if t["name"] == "serve-gpu1-22g")
    first = argo.run_pod("serve", template, {"run-id": "dead-sidecar", "model": "llama-3.1-8b-instruct", "timeout": "3600s"})
    noticed_after_s = time.monotonic() - deaths[0]
    assert first.exit_code == 4 and argo._retried(template, first.exit_code)
    assert noticed_after_s < 60  # the issue's bound: a dead sidecar is noticed within a minute, not after an hour's wait
    assert "vLLM server of llama-3.1-8b-instruct exited with code 137" in first.output
    second = argo.run_pod("serve", template, {"run-id": "dead-sidecar", "model": "llama-3.1-8b-instruct", "timeout": "3600s"})
    assert second.exit_code == 0, second.output[-3000:]
    assert len(argo.vllm_starts) == 2
    table = read_table(repository.child(KEY_PREFIX, "dead-sidecar"), "exp1/llama-3.1-8b-instruct_study2_raw_responses")
    assert len(table) == 8 and (table.status == "ok").all()


def test_a_killed_gpu_step_is_retried_and_resumes_from_its_s3_checkpoint(rendered, cluster, repository, tmp_path):
    """A serve pod is SIGKILLed (a preempted node) after its first checkpoint segment; the retry resumes."""
    import signal
    import threading

    from pipeline.config import example_study_path
    from tests.conftest import read_rows, write_rows

    secrets, configmaps, _ = cluster
    header, rows = read_rows(example_study_path(1))
    repository.write_bytes("inputs/study1_big.csv", write_rows(tmp_path / "big.csv", header, [
        [str(100 + c)] + r[1:] for c in range(10) for r in rows]).read_bytes())  # 60 rows
    checkpoints = repository.child(KEY_PREFIX, "kill-retry", "checkpoints", "exp1")
    serve_pods_started, killed, sidecars = [], [], []

    def recording_sidecar(served, port, vllm_dir):
        from tests.fakes.argo_executor import fake_vllm

        server = fake_vllm(served, port, vllm_dir)
        server.latency_ms = 30
        sidecars.append(server)
        return server

    def kill_first_serve_pod(task, inputs, process):
        if task != "serve":
            return
        serve_pods_started.append(process)
        if len(serve_pods_started) > 1:
            return

        def watch():
            while process.poll() is None and not checkpoints.list("llama-3.1-8b-instruct_study1"):
                threading.Event().wait(0.05)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed.append(sum(len(checkpoints.read_bytes(k).splitlines()) - 1
                                  for k in checkpoints.list("llama-3.1-8b-instruct_study1")))
        threading.Thread(target=watch, daemon=True).start()

    argo = FakeArgo(rendered, {"models": "llama-3.1-8b-instruct", "studies": "1", "study1": "s3://grace/inputs/study1_big.csv",
                               "run-id": "kill-retry", "concurrency": "2"},
                    repository, secrets, configmaps, tmp_path, on_pod_start=kill_first_serve_pod, sidecar_factory=recording_sidecar)
    argo._run_task(_model_task(rendered, "plan"), {})
    template = next(t for t in rendered["spec"]["templates"] if t["name"] == "serve-gpu1-22g")
    inputs = {"run-id": "kill-retry", "model": "llama-3.1-8b-instruct", "timeout": "3600s"}
    first = argo.run_pod("serve", template, inputs)
    assert first.exit_code == 137 and argo._retried(template, 137)  # killed; the retry strategy retries it
    second = argo.run_pod("serve", template, inputs)
    assert second.exit_code == 0, second.output[-3000:]
    assert killed and 0 < killed[0] < 60
    assert sidecars[1].chat_requests == 60 - killed[0]  # the retry redid nothing the checkpoint held
    run = repository.child(KEY_PREFIX, "kill-retry")
    table = read_table(run, "exp1/llama-3.1-8b-instruct_study1_raw_responses")
    assert len(table) == 60 and table.row_index.is_unique and (table.status == "ok").all()


@pytest.mark.embedded
def test_first_cluster_run_on_cpu_with_the_embedded_model(rendered, cluster, repository, tmp_path):
    """The README's first contact: -p models=gemma-3-270m -p extractor-url= : no GPU, no weight cache, no hub, no API key."""
    secrets, configmaps, hub = cluster
    secrets = {k: v for k, v in secrets.items() if k[0] == S3_SECRET[0]}  # only the S3 Secret exists yet
    argo = FakeArgo(rendered, {"models": "gemma-3-270m", "extractor-url": "", "limit": "1", "studies": "2", "max-tokens": "32",
                               "run-id": "first-contact"},
                    repository, secrets, configmaps, tmp_path)
    assert argo.run() == "Succeeded", _failures(argo)
    assert argo.vllm_starts == [] and not hub.requests
    assert {"endpoint(0:gemma-3-270m).serve", "endpoint(0:gemma-3-270m).extract", "report"} <= set(argo.nodes)
    run = repository.child(KEY_PREFIX, "first-contact")
    assert run.exists("report.html") and len(read_table(run, "analysis/study2_analysis")) == 1
