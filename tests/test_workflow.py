"""The Argo WorkflowTemplate: Hera round trip, strict schema, the project's own DAG checks, and every
step's container command run as the workflow invokes it (FAKE Argo executor, REAL S3 bucket, FAKE
model servers)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml
from hera.workflows import WorkflowTemplate
from hera.workflows import models as m

from pipeline.cluster_plan import _item
from pipeline.plan import RUN_STAGES, STAGE_DEPENDENCIES, STUDY_STAGE_DEPENDENCIES
from pipeline.workflow import (
    EXTRACTION_MUTEX, ITEM_FIELDS, KEY_PREFIX, PARAMETERS, S3_SECRET, TEMPLATE_NAME, VLLM_PORT, render_yaml,
)
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
        for expression in _expressions({k: v for k, v in template.items() if k != "dag"}):
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


def test_own_checks_pass_and_catch_broken_templates(rendered):
    assert check_template(rendered) == []
    broken = json.loads(json.dumps(rendered))
    dag = next(t for t in broken["spec"]["templates"] if "dag" in t)["dag"]["tasks"]
    dag[1]["depends"] = "plan && nowhere"
    dag[0]["depends"] = dag[-1]["name"]  # plan after report: a cycle
    dag[2]["template"] = "missing"
    broken["spec"]["templates"][0]["container"]["args"].append("{{inputs.parameters.nope}}")
    broken["spec"]["entrypoint"] = "nope"
    problems = "\n".join(check_template(broken))
    for expected in ("depends on missing task nowhere", "cycle", "missing template missing", "undeclared input", "entrypoint nope"):
        assert expected in problems


def test_dag_mirrors_the_local_plan(rendered):
    templates = {t["name"]: t for t in rendered["spec"]["templates"]}
    tasks = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    stage_tasks = lambda stage: [n for n in tasks if n == stage or n == f"{stage}-on-endpoint"]  # noqa: E731
    for stage, after in {**STAGE_DEPENDENCIES, **STUDY_STAGE_DEPENDENCIES}.items():
        for name in stage_tasks(stage):
            assert set(_depends_targets(tasks[name]["depends"])) == {"plan", *(t for s in after for t in stage_tasks(s))}
    assert "(validate.Succeeded || validate.Failed)" in tasks["merge"]["depends"]  # a failed validation does not block merge
    for stage in RUN_STAGES:
        assert stage in tasks and "withParam" not in tasks[stage]
    assert templates["main"]["dag"]["failFast"] is False
    assert rendered["metadata"]["name"] == TEMPLATE_NAME


def test_gpu_steps_extraction_mutex_artifacts_retries_and_secrets(rendered):
    templates = {t["name"]: t for t in rendered["spec"]["templates"]}
    for name in ("query", "probabilities"):
        (vllm,) = templates[name]["sidecars"]
        assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "{{inputs.parameters.gpus}}"}
        assert vllm["image"].startswith("vllm/vllm-openai:v") and "latest" not in vllm["image"]
        assert {"--tensor-parallel-size", "--dtype", "--max-model-len", "--max-logprobs"} <= set(vllm["args"])
        assert "nvidia.com/gpu" not in json.dumps(templates[name]["container"])  # the sidecar holds the GPU
        assert "--wait-for-endpoint" in templates[name]["container"]["args"]
        assert f"http://localhost:{VLLM_PORT}" in " ".join(templates[name]["container"]["args"])
        assert templates[name]["tolerations"][0]["key"] == "nvidia.com/gpu" and "nodeSelector" in templates[name]["podSpecPatch"]
        assert "sidecars" not in templates[f"{name}-on-endpoint"]
    assert templates["extract"]["synchronization"] == {"mutexes": [{"name": EXTRACTION_MUTEX}]}
    assert rendered["spec"]["artifactRepositoryRef"] == {"configMap": "grace-artifact-repository", "key": "grace-s3"}
    for template in templates.values():
        for artifact in template.get("inputs", {}).get("artifacts", []) + template.get("outputs", {}).get("artifacts", []):
            assert set(artifact["s3"]) == {"key"} and artifact["s3"]["key"].startswith(f"{KEY_PREFIX}/{{{{inputs.parameters.run-id}}}}/")
            assert artifact["archive"] == {"none": {}}
        if "container" in template:
            expression = template["retryStrategy"]["expression"]
            assert "in [4, 6, 7, 137, 143]" in expression and template["retryStrategy"]["backoff"]["factor"] == "2"
            env = {e["name"]: e for e in template["container"]["env"]}
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": S3_SECRET[0], "key": S3_SECRET[2]}
            assert all("value" not in e or e["name"] == "PYTHONUNBUFFERED" for e in env.values())
            assert template["container"]["securityContext"]["runAsNonRoot"] is True
            assert ("DEEPSEEK_API_KEY" in env) == (template["name"] == "extract")  # each secret only where it is used
            assert ("GRACE_ENDPOINT_API_KEY" in env) == template["name"].startswith(("query", "probabilities"))
    text = render_yaml()
    assert "secretKey:" not in text.replace("key: secretKey", "") and "endpoint:" not in text and "bucket:" not in text


def test_parameters_show_in_the_ui_with_descriptions_and_enums(rendered):
    shown = {p["name"]: p for p in rendered["spec"]["arguments"]["parameters"]}
    assert set(shown) == {p.name for p in PARAMETERS}
    assert all(p.get("description") for p in shown.values())
    assert shown["scoring"]["enum"] == ["exact", "first-token", "seed-literal"] and shown["scoring"]["value"] == "exact"
    assert shown["registry"]["value"] == ""  # empty: the shipped registry
    assert shown["studies"]["enum"][0] == shown["studies"]["value"] == "1,2"
    for name in ("models", "studies", "limit", "replications", "scoring", "extractor-url", "extractor-model", "concurrency"):
        assert name in shown


def test_items_carry_every_field_the_templates_read():
    from pipeline.config import RunConfig
    from pipeline.registry import load_registry
    from steps.studies import load_study

    item = _item(load_registry()["gemma-2-27b-it"], load_study(1), "", RunConfig(studies={1: "x"}, models=("gemma-2-27b-it",)))
    assert set(item) == set(ITEM_FIELDS) and all(isinstance(v, str) for v in item.values())
    assert item["tp"] == "2" and item["gpus"] == "2" and item["shm"] == "16Gi" and json.loads(item["node_selector"]) == {}
    assert item["raw_stem"] == "exp1/gemma-2-27b-it_study1_raw_responses"


# ---- every step's container command, run as the workflow invokes it ---------------------

@pytest.fixture
def repository(s3_env):
    """The artifact repository bucket, as the test process (Argo's executor) sees it."""
    return open_store("s3://grace")


def test_every_step_runs_as_the_workflow_invokes_it(rendered, s3, repository, tmp_path):
    secrets = {(S3_SECRET[0], S3_SECRET[1]): ACCESS_KEY, (S3_SECRET[0], S3_SECRET[2]): SECRET_KEY,
               ("grace-extractor", "api-key"): "test-extractor-key"}
    configmaps = {"grace-pipeline-store": {"GRACE_CHECKPOINT_STORE": f"s3://grace/{KEY_PREFIX}", "AWS_ENDPOINT_URL": s3.endpoint,
                                           "AWS_REGION": "us-east-1"}}
    repository.write_bytes("inputs/speaker_production.csv", write_human2(tmp_path / "h2.csv").read_bytes())
    # a researcher's registry in the bucket: 'acme-chat' exists only there, served under another name (without
    # --registry in every step it would be requested as 'acme-chat' and the server would refuse it)
    repository.write_bytes("inputs/my-models.yaml", b"models:\n  - {name: acme-chat, hf_id: acme/chat-7b, served_name: fake-model}\n")
    with FakeOpenAIServer(model="meta-llama/Llama-3.1-8B-Instruct", healthy_after_s=1.0) as sidecar, FakeOpenAIServer() as shared:
        argo = FakeArgo(rendered, {
            "models": "llama-3.1-8b-instruct,acme-chat", "endpoints": f"acme-chat={shared.url}", "limit": "3",
            "registry": "s3://grace/inputs/my-models.yaml",
            "extractor-url": shared.url, "extractor-model": "fake-model", "run-id": "cluster-test",
            "human2": "s3://grace/inputs/speaker_production.csv",
        }, repository, secrets, configmaps, tmp_path, {f"http://localhost:{VLLM_PORT}": sidecar.url})
        phase = argo.run()
        assert phase == "Succeeded", "\n\n".join(f"{p.task}: {p.exit_code}\n{p.output[-3000:]}" for p in argo.pods if p.exit_code)
        assert sidecar.health_requests >= 2  # the step waited for the "model to load"
    ran = [p.task for p in argo.pods]
    for task, count in {"plan": 1, "query": 2, "query-on-endpoint": 2, "extract": 4, "probabilities": 2,
                        "probabilities-on-endpoint": 2, "validate": 2, "merge": 2, "report": 1}.items():
        assert ran.count(task) == count, (task, ran)
    run = repository.child(KEY_PREFIX, "cluster-test")
    for study in (1, 2):
        analysis = read_table(run, f"analysis/study{study}_analysis")
        assert set(analysis.model_name) == {"llama-3.1-8b-instruct", "acme-chat"} and len(analysis) == 6
        assert (analysis.query_status == "ok").all()
    assert run.exists("report.html") and run.exists("manifest.json")
    human = json.loads(run.read_bytes("manifest.json"))["human_data"]["2"]  # validated by the plan step, hash recorded
    assert human["path"] == "s3://grace/inputs/speaker_production.csv" and human["trials"] == 600 and len(human["sha256"]) == 64
    comparison = read_table(run, "comparison/human_model_comparison")  # written by the report step, uploaded by Argo
    people = comparison[(comparison.source == "human") & (comparison.goal == "informational") & (comparison.state == 0)]
    assert people.set_index("option").value["It was terrible"] == pytest.approx(0.58)
    assert "600 trials from 50 participants" in run.read_bytes("report.html").decode()
    checkpoints = run.list("checkpoints")
    assert any(k.startswith("checkpoints/exp1/llama-3.1-8b-instruct_study1/part-") for k in checkpoints)
    assert any(k.startswith("manifests/query-llama-3-1-8b-instruct-study1") for k in run.list("manifests"))
    for pod in argo.pods:
        assert SECRET_KEY not in pod.output and "test-extractor-key" not in pod.output


def test_bad_human_file_fails_the_plan_step(rendered, s3, repository, tmp_path):
    repository.write_bytes("inputs/bad_human.csv", b'"subid","trial","item","goal","true_state","positivity","utterance"\n'
                                                   b'"a",1,"poem","social","heart7","neg","good"\n')
    secrets = {(S3_SECRET[0], S3_SECRET[1]): ACCESS_KEY, (S3_SECRET[0], S3_SECRET[2]): SECRET_KEY}
    configmaps = {"grace-pipeline-store": {"GRACE_CHECKPOINT_STORE": f"s3://grace/{KEY_PREFIX}", "AWS_ENDPOINT_URL": s3.endpoint}}
    argo = FakeArgo(rendered, {"human2": "s3://grace/inputs/bad_human.csv"}, repository, secrets, configmaps, tmp_path, {})
    assert argo.run() == "Failed"
    (plan,) = argo.pods  # no GPU step was started
    assert plan.task == "plan" and plan.exit_code == 2
    assert "s3://grace/inputs/bad_human.csv" in plan.output and "column 'true_state'" in plan.output


def test_bad_input_fails_the_plan_step_without_retry(rendered, s3, repository, tmp_path):
    repository.write_bytes("inputs/broken.csv", b"participant_id,story_shortname\n1,exam\n")
    secrets = {(S3_SECRET[0], S3_SECRET[1]): ACCESS_KEY, (S3_SECRET[0], S3_SECRET[2]): SECRET_KEY}
    configmaps = {"grace-pipeline-store": {"GRACE_CHECKPOINT_STORE": f"s3://grace/{KEY_PREFIX}", "AWS_ENDPOINT_URL": s3.endpoint}}
    argo = FakeArgo(rendered, {"study1": "s3://grace/inputs/broken.csv", "studies": "1"}, repository, secrets, configmaps, tmp_path, {})
    assert argo.run() == "Failed"
    (plan,) = argo.pods
    assert plan.task == "plan" and plan.exit_code == 2 and "s3://grace/inputs/broken.csv" in plan.output
    assert "required column" in plan.output
    retry = next(t for t in rendered["spec"]["templates"] if t["name"] == "plan")["retryStrategy"]["expression"]
    assert "2" not in re.findall(r"\d+", retry.split("in", 1)[1])


def test_a_killed_gpu_step_is_retried_and_resumes_from_its_s3_checkpoint(rendered, s3, repository, tmp_path):
    """A query pod is SIGKILLed (a preempted node) after its first checkpoint segment; the retry resumes."""
    import signal
    import threading

    from tests.conftest import read_rows, write_rows
    from pipeline.config import example_study_path

    header, rows = read_rows(example_study_path(1))
    repository.write_bytes("inputs/study1_big.csv", write_rows(tmp_path / "big.csv", header, [
        [str(100 + c)] + r[1:] for c in range(10) for r in rows]).read_bytes())  # 60 rows
    checkpoints = repository.child(KEY_PREFIX, "kill-retry", "checkpoints", "exp1")
    query_pods_started, killed, retry_started_at = [], [], []

    def kill_first_query_pod(task, inputs, process):
        if task != "query":
            return
        query_pods_started.append(process)
        if len(query_pods_started) > 1:
            retry_started_at.append(sidecar.chat_requests)
            return

        def watch():
            while process.poll() is None and not checkpoints.list("llama-3.1-8b-instruct_study1"):
                threading.Event().wait(0.05)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                killed.append(sum(len(checkpoints.read_bytes(k).splitlines()) - 1
                                  for k in checkpoints.list("llama-3.1-8b-instruct_study1")))
        threading.Thread(target=watch, daemon=True).start()

    secrets = {(S3_SECRET[0], S3_SECRET[1]): ACCESS_KEY, (S3_SECRET[0], S3_SECRET[2]): SECRET_KEY}
    configmaps = {"grace-pipeline-store": {"GRACE_CHECKPOINT_STORE": f"s3://grace/{KEY_PREFIX}", "AWS_ENDPOINT_URL": s3.endpoint}}
    with FakeOpenAIServer(model="meta-llama/Llama-3.1-8B-Instruct", latency_ms=30) as sidecar:
        argo = FakeArgo(rendered, {"models": "llama-3.1-8b-instruct", "studies": "1", "study1": "s3://grace/inputs/study1_big.csv",
                                   "run-id": "kill-retry", "concurrency": "2"},
                        repository, secrets, configmaps, tmp_path, {f"http://localhost:{VLLM_PORT}": sidecar.url},
                        on_pod_start=kill_first_query_pod)
        (plan_task,) = [t for t in rendered["spec"]["templates"][-1]["dag"]["tasks"] if t["name"] == "plan"]
        argo._run_task(plan_task, {})
        query_task = next(t for t in rendered["spec"]["templates"][-1]["dag"]["tasks"] if t["name"] == "query")
        assert argo._run_task(query_task, {"plan": "Succeeded"}) == "Succeeded"
        chat_requests = sidecar.chat_requests
    query_pods = [p for p in argo.pods if p.task == "query"]
    assert [p.exit_code for p in query_pods] == [137, 0]  # killed, retried by the retry strategy, succeeded
    assert killed and 0 < killed[0] < 60
    assert chat_requests - retry_started_at[0] == 60 - killed[0]  # the retry redid nothing the checkpoint held
    run = repository.child(KEY_PREFIX, "kill-retry")
    table = read_table(run, "exp1/llama-3.1-8b-instruct_study1_raw_responses")
    assert len(table) == 60 and table.row_index.is_unique and (table.status == "ok").all()
