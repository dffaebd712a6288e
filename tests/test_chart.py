"""The Helm chart (charts/grace-pipeline), offline: helm-python-sdk (Helm v4's engine and linter,
no cluster) renders and lints it; kubernetes-validate checks the rendered manifests in strict mode.

The chart's WorkflowTemplate is a generated golden file; regenerate it with
``grace-pipeline render --chart charts/grace-pipeline`` (never here, never in CI).
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from pipeline import __version__
from pipeline.cluster.workflow import (
    ARTIFACT_REPOSITORY,
    ENDPOINT_SECRET,
    EXTRACTOR_SECRET,
    HF_SECRET,
    KEY_PREFIX,
    S3_SECRET,
    SERVICE_ACCOUNT,
    STORE_CONFIGMAP,
    TEMPLATE_NAME,
    render_yaml,
)

CHART = Path(__file__).resolve().parents[1] / "charts" / "grace-pipeline"
GOLDEN = CHART / "files" / "workflowtemplate.yaml"
REGENERATE = "regenerate with `grace-pipeline render --chart charts/grace-pipeline`"
RELEASE, NAMESPACE = "grace", "grace-ns"
VALID = {"s3": {"bucket": "grace-artifacts", "endpoint": "minio.minio.svc:9000", "insecure": True}}
WT_SOURCE = "grace-pipeline/templates/workflowtemplate.yaml"
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())  # the chart's kubeVersion floor and the newest schemas
SECRET_NAMES = {"s3": S3_SECRET[0], "hfToken": HF_SECRET[0], "extractor": EXTRACTOR_SECRET[0], "endpoint": ENDPOINT_SECRET[0]}
SUBMITTER = "grace-submitter"  # the account README.md's submit recipe mints a token for
CHART_KINDS = ["ConfigMap", "ConfigMap", "PersistentVolumeClaim", *(["ServiceAccount", "Role", "RoleBinding"] * 2), "ClusterRole",
               "ClusterRoleBinding"]  # besides the template
PREFLIGHT_ROLE = f"grace-pipeline-preflight-{NAMESPACE}"
ARGO_EXPRESSION = re.compile(r"\{\{(workflow\.parameters|workflow\.name|inputs\.parameters|item|tasks\.[a-z0-9-]+\.outputs)\b[^{}]*\}\}")


def merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def documents(manifests: dict[str, str]) -> list[dict]:
    """Every rendered Kubernetes object (NOTES.txt and empty templates left out)."""
    docs = []
    for source, text in manifests.items():
        if not source.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.fixture(scope="module")
def manifests(chart) -> dict[str, str]:
    return render(chart, VALID)


@pytest.fixture(scope="module")
def docs(manifests) -> list[dict]:
    return documents(manifests)


@pytest.fixture(scope="module")
def expected_template() -> str:
    return render_yaml()


# --- the generated WorkflowTemplate ----------------------------------------------------------------

def test_chart_copy_is_the_generated_template(expected_template):
    assert GOLDEN.exists(), f"{GOLDEN} is missing: {REGENERATE}"
    assert GOLDEN.read_bytes() == expected_template.encode(), f"{GOLDEN} differs from pipeline/cluster/workflow.py: {REGENERATE}"


def test_workflowtemplate_is_emitted_byte_for_byte(manifests, docs, expected_template):
    assert manifests[WT_SOURCE] == GOLDEN.read_text()
    template = one(docs, "WorkflowTemplate", TEMPLATE_NAME)
    assert template == yaml.safe_load(expected_template)
    assert "namespace" not in template["metadata"]  # left to `helm install -n`


def test_argo_expressions_survive_helm(manifests, expected_template):
    text = manifests[WT_SOURCE]
    assert "{{ ." not in text and "{{." not in text, "a Helm expression leaked into the WorkflowTemplate"
    assert "{{workflow.parameters.models}}" in text
    expressions = re.findall(r"\{\{.*?\}\}", text)
    assert expressions == re.findall(r"\{\{.*?\}\}", expected_template)
    assert [e for e in expressions if not ARGO_EXPRESSION.fullmatch(e)] == []


def test_workflowtemplate_can_be_left_out(chart):
    docs = documents(render(chart, merged(VALID, {"workflowTemplate": {"install": False}})))
    assert sorted(d["kind"] for d in docs) == sorted(CHART_KINDS)


def test_workflowtemplate_refers_to_what_the_chart_installs(docs):
    spec = one(docs, "WorkflowTemplate", TEMPLATE_NAME)["spec"]
    account = one(docs, "ServiceAccount", SERVICE_ACCOUNT)
    repository = one(docs, "ConfigMap", ARTIFACT_REPOSITORY[0])
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert spec["artifactRepositoryRef"] == {"configMap": repository["metadata"]["name"], "key": ARTIFACT_REPOSITORY[1]}
    assert ARTIFACT_REPOSITORY[1] in repository["data"]
    containers = [c for t in spec["templates"] if "container" in t for c in (t["container"], *t.get("sidecars", []))]
    env_from = {ref["configMapRef"]["name"] for c in containers for ref in c.get("envFrom", [])}
    assert env_from == {one(docs, "ConfigMap", STORE_CONFIGMAP)["metadata"]["name"]}
    secret_refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                   for c in containers for e in c.get("env", []) if "valueFrom" in e}
    assert secret_refs == {(S3_SECRET[0], S3_SECRET[1]), (S3_SECRET[0], S3_SECRET[2]), HF_SECRET, EXTRACTOR_SECRET, ENDPOINT_SECRET}


def test_model_cache_is_the_pvc_the_gpu_steps_mount(docs, chart):
    from pipeline.cluster.workflow import MODEL_CACHE_PVC

    pvc = one(docs, "PersistentVolumeClaim", MODEL_CACHE_PVC)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # downloaded weights survive an uninstall
    assert "storageClassName" not in pvc["spec"]
    spec = one(docs, "WorkflowTemplate", TEMPLATE_NAME)["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for t in spec["templates"] for v in t.get("volumes", [])
              if "persistentVolumeClaim" in v}
    assert claims == {pvc["metadata"]["name"]}
    own = documents(render(chart, merged(VALID, {"modelCache": {"create": False}})))
    assert not [d for d in own if d["kind"] == "PersistentVolumeClaim"]
    nfs = one(documents(render(chart, merged(VALID, {"modelCache": {"storageClassName": "nfs-client", "size": "1Ti"}}))),
              "PersistentVolumeClaim", MODEL_CACHE_PVC)
    assert nfs["spec"]["storageClassName"] == "nfs-client" and nfs["spec"]["resources"]["requests"]["storage"] == "1Ti"


# --- the chart's own objects -------------------------------------------------------------------------

def test_chart_metadata(chart):
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"]) == ("v2", "grace-pipeline", "0.1.0")
    assert meta["appVersion"] == __version__, "appVersion must be the pipeline version the template was rendered from"
    assert meta["kubeVersion"] == ">=1.27.0-0"


def test_artifact_repository(docs):
    repository = one(docs, "ConfigMap", ARTIFACT_REPOSITORY[0])
    # Argo reads a namespace default only from a ConfigMap named artifact-repositories: claim nothing of the sort here
    assert "annotations" not in repository["metadata"] and ARTIFACT_REPOSITORY[0] != "artifact-repositories"
    assert list(repository["data"]) == [ARTIFACT_REPOSITORY[1]]
    assert yaml.safe_load(repository["data"][ARTIFACT_REPOSITORY[1]]) == {"s3": {
        "bucket": "grace-artifacts", "endpoint": "minio.minio.svc:9000", "insecure": True, "region": "us-east-1",
        "accessKeySecret": {"name": S3_SECRET[0], "key": S3_SECRET[1]},
        "secretKeySecret": {"name": S3_SECRET[0], "key": S3_SECRET[2]},
    }}


def test_store_configmap(docs):
    store = one(docs, "ConfigMap", STORE_CONFIGMAP)
    assert store["data"] == {"GRACE_CHECKPOINT_STORE": f"s3://grace-artifacts/{KEY_PREFIX}",
                             "AWS_ENDPOINT_URL": "http://minio.minio.svc:9000", "AWS_REGION": "us-east-1"}


@pytest.mark.parametrize("s3, store_endpoint, argo_endpoint", [
    pytest.param({"endpoint": "minio.example.org", "insecure": False}, "https://minio.example.org", "minio.example.org", id="https"),
    pytest.param({"endpoint": "", "insecure": False, "region": "eu-west-1"}, None, "s3.amazonaws.com", id="aws"),
])
def test_store_endpoint_follows_values(chart, s3, store_endpoint, argo_endpoint):
    docs = documents(render(chart, merged(VALID, {"s3": s3})))
    store = one(docs, "ConfigMap", STORE_CONFIGMAP)["data"]
    repository = yaml.safe_load(one(docs, "ConfigMap", ARTIFACT_REPOSITORY[0])["data"][ARTIFACT_REPOSITORY[1]])["s3"]
    assert store.get("AWS_ENDPOINT_URL") == store_endpoint
    assert store["AWS_REGION"] == repository["region"] == s3.get("region", "us-east-1")
    assert (repository["endpoint"], repository["insecure"]) == (argo_endpoint, s3["insecure"])


def test_key_format_is_optional(chart):
    docs = documents(render(chart, merged(VALID, {"s3": {"keyFormat": "grace-other/{{workflow.name}}"}})))
    repository = yaml.safe_load(one(docs, "ConfigMap", ARTIFACT_REPOSITORY[0])["data"][ARTIFACT_REPOSITORY[1]])["s3"]
    assert repository["keyFormat"] == "grace-other/{{workflow.name}}"


def test_service_account_and_least_privilege_rbac(docs):
    account = one(docs, "ServiceAccount", SERVICE_ACCOUNT)
    assert account.get("automountServiceAccountToken") is True  # Argo's executor reports outputs with this token
    role = one(docs, "Role", SERVICE_ACCOUNT)
    assert role["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
                             {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "resourceNames": ["grace-model-cache"],
                              "verbs": ["get"]}]  # the executor's task results; the plan step's preflight reads the weight cache
    binding = one(docs, "RoleBinding", SERVICE_ACCOUNT)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]
    # cluster-wide: only reading nodes and storage classes, for the preflight
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["metadata"]["name"] == PREFLIGHT_ROLE and cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get"]}]
    (cluster_binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert cluster_binding["roleRef"]["name"] == PREFLIGHT_ROLE and {s["name"] for s in cluster_binding["subjects"]} == {
        SERVICE_ACCOUNT, SUBMITTER}


def test_the_preflights_node_reader_can_be_left_out(chart):
    docs = documents(render(chart, merged(VALID, {"preflight": {"readNodes": False}})))
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    alone = documents(render(chart, merged(VALID, {"submitter": {"create": False}})))
    assert [s["name"] for d in alone if d["kind"] == "ClusterRoleBinding" for s in d["subjects"]] == [SERVICE_ACCOUNT]


def grants(rule: dict, group: str, resource: str, verb: str = "*") -> bool:
    """Whether an RBAC rule grants ``verb`` on ``resource`` of API ``group`` (wildcards included; verb '*': any verb)."""
    return (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and \
        (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and \
        (verb == "*" or verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))


def roles(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Role", "ClusterRole")]


def test_the_submitter_account_of_the_readme_exists_with_least_privilege(docs):
    """README: ARGO_TOKEN="$(kubectl -n grace create token grace-submitter)": the chart creates that account, which may submit
    and retry workflows from the template and read their status and logs, and nothing more."""
    readme = (CHART.parents[1] / "README.md").read_text()
    assert f"create token {SUBMITTER}" in readme
    account = one(docs, "ServiceAccount", SUBMITTER)
    assert account["automountServiceAccountToken"] is False  # no pod runs as it; tokens are minted on demand
    role = one(docs, "Role", SUBMITTER)
    rules = role["rules"]
    for group, resource, verb in (("argoproj.io", "workflowtemplates", "get"), ("argoproj.io", "workflows", "create"),
                                  ("argoproj.io", "workflows", "get"), ("argoproj.io", "workflows", "watch"),
                                  ("argoproj.io", "workflows", "update"), ("", "pods/log", "get"), ("", "pods", "delete")):
        assert any(grants(r, group, resource, verb) for r in rules), (group, resource, verb)  # submit, status, retry, logs
    forbidden = (("", "secrets", "*"), ("argoproj.io", "workflows", "delete"), ("argoproj.io", "workflowtemplates", "create"),
                 ("argoproj.io", "workflowtemplates", "update"), ("", "pods/exec", "*"), ("rbac.authorization.k8s.io", "roles", "*"),
                 ("", "serviceaccounts/token", "*"))
    for group, resource, verb in forbidden:
        assert not any(grants(r, group, resource, verb) for r in rules), (group, resource, verb)
    assert not [r for r in rules if "*" in r["apiGroups"] + r["resources"] + r["verbs"]]
    readable = [r for r in rules if r["resources"] in (["configmaps"], ["persistentvolumeclaims"])]
    assert readable and all(r["verbs"] == ["get"] and r.get("resourceNames") for r in readable)  # the preflight's reads: named objects
    binding = one(docs, "RoleBinding", SUBMITTER)
    assert binding["roleRef"]["name"] == SUBMITTER and binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SUBMITTER, "namespace": NAMESPACE}]


def test_no_account_of_the_chart_may_read_secrets(docs):
    found = [(r["metadata"]["name"], rule) for r in roles(docs) for rule in r["rules"] if grants(rule, "", "secrets")]
    assert found == []
    planted = {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}  # the check can fail: a wildcard counts
    assert grants(planted, "", "secrets")


def test_the_submitter_account_can_be_left_out(chart):
    docs = documents(render(chart, merged(VALID, {"submitter": {"create": False}})))
    assert not [d for d in docs if d["metadata"]["name"] == SUBMITTER]
    assert lint(merged(VALID, {"submitter": {"create": False}}))["errors"] == []


def test_notes_tell_how_to_create_secrets_and_submit(manifests):
    notes = manifests["grace-pipeline/templates/NOTES.txt"]
    for name, key in ((S3_SECRET[0], S3_SECRET[1]), (S3_SECRET[0], S3_SECRET[2]), HF_SECRET, EXTRACTOR_SECRET, ENDPOINT_SECRET):
        assert re.search(rf"kubectl create secret generic {name} -n {NAMESPACE} \\\n(.*\n)*?.*--from-literal={key}=<", notes), (name, key)
    assert "grace-pipeline submit -p models=" in notes


def test_packaged_chart_renders_the_same(tmp_path, manifests):
    archive = helm_python.package(CHART, destination=tmp_path)
    with helm_python.Chart.load(archive) as packaged:
        assert render(packaged, VALID) == manifests  # .helmignore keeps files/workflowtemplate.yaml


# --- values are checked ------------------------------------------------------------------------------

def lint(values: dict, kube_version: str = "v1.30.0") -> dict:
    return helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=kube_version)


@pytest.mark.parametrize("kube_version", [f"v{v}" for v in KUBE_VERSIONS])
def test_strict_lint_passes(kube_version):
    report = lint(VALID, kube_version)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


INVALID = [
    pytest.param({"s3": {"bucket": None}}, "missing property 'bucket'", id="bucket-missing"),
    pytest.param({"s3": {"bucket": ""}}, "/s3/bucket", id="bucket-empty"),
    pytest.param({"s3": {"bucket": "Bad_Bucket!"}}, "/s3/bucket", id="bucket-bad-name"),
    pytest.param({"s3": {"endpoint": "http://minio.minio.svc:9000"}}, "/s3/endpoint", id="endpoint-with-scheme"),
    pytest.param({"s3": {"insecure": "yes"}}, "/s3/insecure", id="insecure-string"),
    pytest.param({"s3": {"bukket": "grace-artifacts"}}, "additional properties 'bukket'", id="s3-typo"),
    pytest.param({"replicas": 2}, "additional properties 'replicas'", id="unknown-top-level-key"),
    pytest.param({"workflowTemplate": {"install": "false"}}, "/workflowTemplate/install", id="install-string"),
    pytest.param({"submitter": {"create": "yes"}}, "/submitter/create", id="submitter-create-string"),
    pytest.param({"preflight": {"readNodes": 1}}, "/preflight/readNodes", id="preflight-read-nodes-number"),
    pytest.param({"modelCache": {"size": "lots"}}, "/modelCache/size", id="cache-size-not-a-quantity"),
    pytest.param({"modelCache": {"create": "yes"}}, "/modelCache/create", id="cache-create-string"),
    pytest.param({"secrets": {"s3": {"name": "my-s3"}}}, "/secrets/s3/name", id="s3-secret-renamed"),
    pytest.param({"secrets": {"extractor": {"name": "deepseek"}}}, "/secrets/extractor/name", id="extractor-secret-renamed"),
    pytest.param({"secrets": {"s3": {"accessKey": "CANARY-ACCESS-KEY"}}}, "additional properties 'accessKey'", id="secret-value-smuggled"),
]


@pytest.mark.parametrize("override, message", INVALID)
def test_invalid_values_fail_render(chart, override, message):
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(message)):
        render(chart, merged(VALID, override))


@pytest.mark.parametrize("override, message", INVALID)
def test_invalid_values_fail_lint(override, message):
    report = lint(merged(VALID, override))
    assert any(message in error for error in report["errors"]), report


def test_schema_pins_the_names_of_pipeline_workflow(chart):
    schema = chart.schema
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    consts = {key: spec["properties"]["name"]["const"] for key, spec in schema["properties"]["secrets"]["properties"].items()}
    assert consts == SECRET_NAMES
    assert {key: spec["name"] for key, spec in chart.values["secrets"].items()} == SECRET_NAMES


def test_every_object_level_of_the_schema_is_closed(chart):
    def open_objects(node: dict, where: str) -> list[str]:
        found = [where] if node.get("type") == "object" and node.get("additionalProperties") is not False else []
        for key, child in node.get("properties", {}).items():
            found += open_objects(child, f"{where}.{key}")
        return found

    assert open_objects(chart.schema, "values") == []


# --- manifests are valid Kubernetes objects ----------------------------------------------------------

@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_pass_strict_kubernetes_validation(docs, version):
    validated = []
    for doc in docs:
        if doc["apiVersion"].startswith("argoproj.io/"):
            continue  # a CRD: kubernetes-validate ships no schema for it
        kubernetes_validate.validate(doc, version, strict=True)
        validated.append(doc["kind"])
    assert sorted(validated) == sorted(CHART_KINDS)


def test_strict_validation_would_catch_a_wrong_field(docs):
    """The check above can fail: strict mode rejects an unknown field."""
    account = copy.deepcopy(one(docs, "ServiceAccount", SERVICE_ACCOUNT))
    account["automountToken"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(account, KUBE_VERSIONS[-1], strict=True)


# --- secrets -----------------------------------------------------------------------------------------

CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN", "DEEPSEEK_API_KEY",
                  "GRACE_ENDPOINT_API_KEY"}


def test_no_secret_is_rendered(manifests, docs):
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert not [source for source, text in manifests.items() if re.search(r"^kind:\s*Secret\s*$", text, re.M)]
    assert not [d for d in docs if "stringData" in d]
    for config_map in (d for d in docs if d["kind"] == "ConfigMap"):
        assert not [k for k in config_map["data"] if re.search(r"SECRET|ACCESS_KEY|TOKEN|PASSWORD|API_KEY", k, re.I)]
    repository = yaml.safe_load(one(docs, "ConfigMap", ARTIFACT_REPOSITORY[0])["data"][ARTIFACT_REPOSITORY[1]])["s3"]
    assert repository["accessKeySecret"] == {"name": S3_SECRET[0], "key": S3_SECRET[1]}  # a reference by name only
    assert repository["secretKeySecret"] == {"name": S3_SECRET[0], "key": S3_SECRET[2]}
    assert not {"accessKey", "secretKey", "sessionToken"} & set(repository)
    spec = one(docs, "WorkflowTemplate", TEMPLATE_NAME)["spec"]
    containers = [c for t in spec["templates"] if "container" in t for c in (t["container"], *t.get("sidecars", []))]
    credentials = [e for c in containers for e in c.get("env", []) if e["name"] in CREDENTIAL_ENV]
    assert credentials and all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in credentials)


def test_values_carry_no_secret_material(chart):
    """values.yaml names the Secrets and nothing else (the schema rejects any other key: see INVALID)."""
    assert set(chart.values["secrets"]) == set(SECRET_NAMES)
    assert all(set(spec) == {"name"} for spec in chart.values["secrets"].values())


def test_a_smuggled_secret_value_never_reaches_a_manifest(chart, tmp_path):
    """The schema rejects secret values (INVALID); even a copy of the chart without it renders none of them."""
    canary = "CANARY-c2VjcmV0"
    values = merged(VALID, {"secrets": {key: {"accessKey": canary, "secretKey": canary, "token": canary, "api-key": canary}
                                        for key in SECRET_NAMES}})
    with pytest.raises(helm_python.HelmValuesError):
        render(chart, values)
    unchecked = shutil.copytree(CHART, tmp_path / "grace-pipeline")
    (unchecked / "values.schema.json").unlink()
    with helm_python.Chart.load(unchecked) as loaded:
        manifests = render(loaded, values)
    assert manifests and not [source for source, text in manifests.items() if canary in text]
