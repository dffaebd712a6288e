"""The generated WorkflowTemplate (and the chart's copy) against Argo's FULL CRD schemas, v3.6, v3.7 and v4.1:
what a Kubernetes API server enforces on `helm install` / `kubectl apply` (Argo v4 installs these schemas by default).

The CRDs are test data outside the project (``../shared/argo-crds/``, see its README); the tests skip with
a reason where that folder is absent.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cluster.workflow import render_yaml

CRDS = Path(__file__).resolve().parents[2] / "shared" / "argo-crds"
VERSIONS = ("v3.6.19", "v3.7.18", "v4.1.2")
CHART_COPY = Path(__file__).resolve().parents[1] / "charts" / "grace-pipeline" / "files" / "workflowtemplate.yaml"
pytestmark = pytest.mark.skipif(not CRDS.is_dir(), reason=f"Argo's CRD schemas are not here ({CRDS}): test data of this team's CI only")


def json_schema(openapi: dict) -> dict:
    """Kubernetes' structural OpenAPI v3 schema as JSON Schema: objects with ``properties`` (and no
    ``x-kubernetes-preserve-unknown-fields``) reject unknown fields; ``x-kubernetes-int-or-string`` is an
    integer or a string (that must match ``pattern``, e.g. a resource quantity); ``nullable`` admits null."""
    schema = {k: v for k, v in openapi.items() if not k.startswith("x-kubernetes-") and k not in ("nullable", "format")}
    if "properties" in schema:
        schema["properties"] = {k: json_schema(v) for k, v in schema["properties"].items()}
        if not openapi.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = json_schema(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = json_schema(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [json_schema(s) for s in schema[key]]
    if openapi.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if openapi.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


@lru_cache(maxsize=None)
def crd_schema(kind: str, version: str) -> dict:
    crd = yaml.load((CRDS / f"{kind}-{version}.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


_VALIDATORS: dict[int, jsonschema.Draft7Validator] = {}


def _validator(key: int, schema: dict) -> jsonschema.Draft7Validator:
    return _VALIDATORS.setdefault(key, jsonschema.Draft7Validator(schema))


def errors(document: dict, schema: dict) -> list[str]:
    validator = _validator(id(schema), schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.safe_load(render_yaml())


@pytest.mark.parametrize("version", VERSIONS)
def test_generated_template_is_accepted(template, version):
    assert errors(template, crd_schema("workflowtemplates", version)) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_charts_copy_is_accepted(version):
    assert errors(yaml.safe_load(CHART_COPY.read_text()), crd_schema("workflowtemplates", version)) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_workflow_from_the_template_is_accepted(template, version):
    """What `argo submit --from workflowtemplate` creates: a Workflow with the template's spec."""
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "grace-pipeline-"},
                "spec": copy.deepcopy(template["spec"])}
    assert errors(workflow, crd_schema("workflows", version)) == []


def _first(template: dict, predicate) -> dict:
    return next(t for t in template["spec"]["templates"] if predicate(t))


@pytest.mark.parametrize("version", VERSIONS)
def test_a_planted_unknown_field_is_caught(template, version):
    broken = copy.deepcopy(template)
    _first(broken, lambda t: "container" in t)["container"]["imagePullPolicyy"] = "Always"
    found = errors(broken, crd_schema("workflowtemplates", version))
    assert found and "imagePullPolicyy" in "\n".join(found)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_planted_non_quantity_is_caught(template, version):
    """The bug this suite exists for: a parameter where Kubernetes wants a quantity (argo-workflows#6939, #15005)."""
    broken = copy.deepcopy(template)
    (vllm,) = _first(broken, lambda t: t.get("sidecars"))["sidecars"]
    vllm["resources"]["limits"]["nvidia.com/gpu"] = "{{inputs.parameters.gpus}}"
    found = errors(broken, crd_schema("workflowtemplates", version))
    assert found and "nvidia.com/gpu" in "\n".join(found)


def test_no_resource_quantity_is_an_expression(template):
    """Every resource quantity in the template is literal (none is substituted by Argo at run time)."""
    def quantities(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("requests", "limits") and isinstance(value, dict):
                    yield from value.values()
                else:
                    yield from quantities(value)
        elif isinstance(node, list):
            for value in node:
                yield from quantities(value)
    found = list(quantities(template))
    assert found and not [q for q in found if "{{" in json.dumps(q)]
