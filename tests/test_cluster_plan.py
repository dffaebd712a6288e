"""The cluster's plan step (``grace-pipeline cluster-plan``) with the run's registry: models added or changed with
``--registry`` are placed in a GPU class the WorkflowTemplate has, or refused (exit 2) naming the class it lacks."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.cli import main
from pipeline.cluster.cluster_plan import cluster_plan
from pipeline.cluster.placement import classes_arg, gpu_class, gpu_classes, parse_classes, place
from pipeline.config import RunConfig, example_study_path
from pipeline.registry import load_registry
from pipeline.run_setup import models_for
from steps.errors import ConfigError
from tests.readme_examples import readme_registry, readme_registry_models

SHIPPED_CLASSES = gpu_classes(load_registry().values())


@pytest.fixture
def readme_registry_file(tmp_path):
    path = tmp_path / "my_models.yaml"
    path.write_text(readme_registry())
    return path


def _plan_args(tmp_path, registry, models: str) -> list[str]:
    return ["cluster-plan", "--models", models, "--registry", str(registry), "--studies", "2", "--limit", "2",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "plan"), "--gpu-classes", classes_arg(SHIPPED_CLASSES)]


def test_the_readmes_registry_model_is_placed_in_a_class_of_the_template(tmp_path, readme_registry_file, capsys):
    """The README's own example used to end cluster-plan in KeyError: 'gpu1' (it was placed from the shipped registry only)."""
    (name,) = readme_registry_models()
    assert main(_plan_args(tmp_path, readme_registry_file, name)) == 0, capsys.readouterr().err
    plan = tmp_path / "plan"
    assert json.loads((plan / "gpu1-15g.json").read_text()) == [name]  # 1 GPU, no memory asked: the least demanding 1-GPU class
    for gpu in SHIPPED_CLASSES:  # every class's output parameter exists, as the template reads them all
        assert (plan / f"{gpu.name}.json").exists()
    manifest = json.loads(next((tmp_path / "store").glob("*/manifest.json")).read_text())
    assert manifest["models"][name]["hf_id"] == "Qwen/Qwen2.5-7B-Instruct" and manifest["models"][name]["max_model_len"] == 8192


def test_an_override_of_a_shipped_model_moves_it_to_the_class_it_now_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf-test")  # both models are gated: a FAKE hub grants them
    registry = tmp_path / "ops.yaml"
    registry.write_text("models:\n  - {name: gemma-2-9b-it, gpus: 2, tensor_parallel_size: 2, min_gpu_memory_mib: 30000}\n")
    config = RunConfig(studies={2: example_study_path(2)}, models=("gemma-2-9b-it", "llama-3.1-8b-instruct"), registry=str(registry),
                       row_limit=1, store=str(tmp_path / "store"))
    hub = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    plan = cluster_plan(config, tmp_path / "plan", http=hub, template_classes=SHIPPED_CLASSES)
    assert plan["gpu2-40g.json"] == ["gemma-2-9b-it"] and plan["gpu1-22g.json"] == ["llama-3.1-8b-instruct"]


def test_a_model_needing_a_class_the_template_lacks_is_refused_before_anything_runs(tmp_path, capsys):
    registry = tmp_path / "big.yaml"
    registry.write_text("models:\n  - {name: acme-3gpu, hf_id: acme/huge, gpus: 3, tensor_parallel_size: 3}\n")
    assert main(_plan_args(tmp_path, registry, "acme-3gpu")) == 2
    err = capsys.readouterr().err
    assert "acme-3gpu" in err and "needs 3 GPU(s)" in err and "grace-pipeline render --registry" in err and "Traceback" not in err
    assert not (tmp_path / "plan").exists() and not (tmp_path / "store").exists()  # refused before the store or any plan file


def test_placement_picks_the_least_demanding_fitting_class():
    registry = load_registry()
    selector = registry["gemma-2-9b-it"].model_copy(update={"node_selector": {"pool": "a100"}})
    classes = [*SHIPPED_CLASSES, gpu_class(selector)]
    assert place(registry["gemma-2-2b-it"], classes).name == "gpu1-15g"
    assert place(registry["llama-3.1-8b-instruct"], classes).name == "gpu1-22g"  # not the node-selector class
    assert place(selector, classes) == gpu_class(selector)  # asks for the label: only that class has it
    with pytest.raises(ConfigError, match="node labels"):
        place(selector, SHIPPED_CLASSES)
    assert parse_classes(classes_arg(classes)) == classes


def test_the_run_registry_reaches_submits_checks(tmp_path, readme_registry_file):
    (name,) = readme_registry_models()
    assert models_for([name], str(readme_registry_file))[name].hf_id == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ConfigError, match="unknown model"):
        models_for([name], None)
    assert main(["submit", "--dry-run", "-p", f"models={name}", "-p", f"registry={readme_registry_file}", "--study-rows", "1=6,2=6"]) == 0
