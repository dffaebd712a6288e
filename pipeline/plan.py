"""The DAG, described once: which nodes run, and after what.

Both runners read this: the local runner (``pipeline.runner.local``) executes it on one
machine; the Argo workflow (``pipeline.cluster.workflow``) is generated from it. A node is one
stage for one model x study (or a whole-run stage, model/study None). Node names are
valid Argo task names (``^[a-zA-Z0-9][-a-zA-Z0-9]*$``).

The served stages (Experiment 1 ``query`` and Experiment 2 ``probabilities``) of one model
run against ONE start of that model's server, for every study (:func:`served_groups`): the
local runner starts one server per model for the whole run, the cluster runs them in one pod
with one vLLM sidecar. Experiment 2 runs before Experiment 1 (see STAGE_DEPENDENCIES), and
extraction waits only for its own model x study's queries.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Optional

from pipeline.registry import model_slug
from steps.errors import ConfigError

# stage -> stages it waits for, per model x study.
# Experiment 2 does not read Experiment 1, but both use the model's one server: Experiment 2 goes first, so that a
# model's serve step (pipeline.cluster.serve) ends when its queries end and extraction, the one stage serialized across models,
# starts at once; the order only sequences the work (ORDER_ONLY: a failed Experiment 2 does not stop Experiment 1).
STAGE_DEPENDENCIES: dict[str, tuple[str, ...]] = {"probabilities": (), "query": ("probabilities",), "extract": ("query",)}
# whole-study stages -> stages they wait for, for every model of that study.
STUDY_STAGE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "validate": ("query", "extract", "probabilities"),
    "merge": ("validate", "query", "extract", "probabilities"),
}
# a failure here does not stop dependents: broken data can still be merged and inspected, a failed fit leaves the report
NON_BLOCKING_STAGES = ("validate", "fit")
# whole-study and whole-run stages run on the models that finished: no failure before them stops them (partial results:
# the report names what failed and why, and the run still fails)
# (stage, dependency) that only orders work: a failed Experiment 2 does not stop Experiment 1
ORDER_ONLY = frozenset({("query", "probabilities")})
SERVED_STAGES = ("query", "probabilities")  # stages that send requests to the model under study (extract uses the extractor)
RUN_STAGES = ("fit", "report")  # one node each for the whole run, after everything else, in this order
PARTIAL_STAGES = (*STUDY_STAGE_DEPENDENCIES, *RUN_STAGES)
ALL_STAGES: tuple[str, ...] = ("query", "extract", "probabilities", *STUDY_STAGE_DEPENDENCIES, *RUN_STAGES)  # as users list them
_ARGO_NAME = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")


@dataclass(frozen=True)
class Node:
    """One unit of work in the DAG."""

    name: str
    stage: str
    model: Optional[str]
    study: Optional[int]
    depends: tuple[str, ...] = ()


def node_name(stage: str, model: str, study: int) -> str:
    """'query', 'meta-llama/Llama-3.1-8B', 1 -> 'query-meta-llama-llama-3-1-8b-study1'."""
    slug = re.sub(r"[^a-z0-9-]+", "-", model_slug(model)).strip("-")
    return f"{stage}-{slug}-study{study}"[:128]


def build_plan(models: list[str], studies: list[int], stages: list[str]) -> list[Node]:
    """Nodes in a valid execution order (each after its dependencies)."""
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(ALL_STAGES)}")
    nodes: list[Node] = []
    for stage in STAGE_DEPENDENCIES:  # declaration order is a topological order
        if stage not in stages:
            continue
        for model in models:
            for study in studies:
                depends = tuple(node_name(d, model, study) for d in STAGE_DEPENDENCIES[stage] if d in stages)
                nodes.append(Node(node_name(stage, model, study), stage, model, study, depends))
    for stage, after in STUDY_STAGE_DEPENDENCIES.items():
        if stage not in stages:
            continue
        for study in studies:
            depends = tuple(n.name for n in nodes if n.study == study and n.stage in after)
            nodes.append(Node(f"{stage}-study{study}", stage, None, study, depends))
    for stage in RUN_STAGES:
        if stage in stages:
            nodes.append(Node(stage, stage, None, None, tuple(n.name for n in nodes)))
    check_dag(nodes)
    return nodes


def check_dag(nodes: list[Node]) -> None:
    """Raise ConfigError unless names are unique Argo names and every dependency comes earlier."""
    seen: set[str] = set()
    for node in nodes:
        if not _ARGO_NAME.match(node.name):
            raise ConfigError(f"node name {node.name!r} is not a valid Argo task name")
        if node.name in seen:
            raise ConfigError(f"two nodes are named {node.name!r} (two model names give the same slug)")
        missing = [d for d in node.depends if d not in seen]
        if missing:
            raise ConfigError(f"node {node.name!r} depends on {missing}, which do not run before it")
        seen.add(node.name)


def blocks(dependency_stage: str, stage: str) -> bool:
    """Whether a failed ``dependency_stage`` node stops a ``stage`` node that depends on it (never a PARTIAL_STAGES node)."""
    return (dependency_stage not in NON_BLOCKING_STAGES and (stage, dependency_stage) not in ORDER_ONLY
            and stage not in PARTIAL_STAGES)


def served_groups(nodes: list[Node]) -> dict[str, list[Node]]:
    """Model -> its served nodes (every study and served stage), which share one server start."""
    groups: dict[str, list[Node]] = {}
    for node in nodes:
        if node.stage in SERVED_STAGES and node.model is not None:
            groups.setdefault(node.model, []).append(node)
    return groups


def plan_as_dicts(nodes: list[Node]) -> list[dict]:
    """JSON-ready form (e.g. for an Argo ``withParam`` fan-out)."""
    return [asdict(n) for n in nodes]
