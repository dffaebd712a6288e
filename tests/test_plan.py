"""The DAG description: names, order, dependencies."""

from __future__ import annotations

import pytest

from pipeline.plan import Node, build_plan, check_dag, node_name
from steps.errors import ConfigError


def test_query_fans_out_model_by_study():
    nodes = build_plan(["gemma-2-9b-it", "meta-llama/Llama-3.1-8B-Instruct"], [1, 2], ["query"])
    assert [n.name for n in nodes] == [
        "query-gemma-2-9b-it-study1", "query-gemma-2-9b-it-study2",
        "query-meta-llama--llama-3-1-8b-instruct-study1", "query-meta-llama--llama-3-1-8b-instruct-study2",
    ]
    assert all(n.depends == () for n in nodes)


def test_unknown_stage():
    with pytest.raises(ConfigError, match="unknown stage"):
        build_plan(["m"], [1], ["query", "dance"])


@pytest.mark.parametrize("nodes,match", [
    pytest.param([Node("a", "query", "m", 1, ("b",)), Node("b", "query", "m", 2)], "depends on", id="dependency-later"),
    pytest.param([Node("a", "query", "m", 1), Node("a", "query", "m", 2)], "two nodes", id="duplicate"),
    pytest.param([Node("bad_name", "query", "m", 1)], "Argo task name", id="bad-name"),
])
def test_check_dag_rejects(nodes, match):
    with pytest.raises(ConfigError, match=match):
        check_dag(nodes)


def test_node_names_are_argo_safe():
    assert node_name("query", "Qwen/Qwen2.5-7B_Instruct", 2) == "query-qwen--qwen2-5-7b-instruct-study2"


def test_experiment_2_runs_first_on_the_models_one_server_and_its_failure_does_not_stop_experiment_1():
    from pipeline.plan import blocks, served_groups

    nodes = {n.name: n for n in build_plan(["m"], [1, 2], ["query", "extract", "probabilities", "validate"])}
    assert nodes["query-m-study1"].depends == ("probabilities-m-study1",)
    assert nodes["extract-m-study1"].depends == ("query-m-study1",)
    assert not blocks("probabilities", "query") and blocks("query", "extract") and not blocks("validate", "merge")
    assert [n.name for n in served_groups(list(nodes.values()))["m"]] == [
        "probabilities-m-study1", "probabilities-m-study2", "query-m-study1", "query-m-study2"]
