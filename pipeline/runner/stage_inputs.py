"""What each stage reads, and whether it is there: any subset of stages runs, or says what to run first.

A stage reads what an earlier stage wrote into the run (``pipeline.layout``). When the run
makes that input itself (the earlier stage is among ``--stages``) nothing is checked here:
the DAG orders them, and a failed producer skips its consumers. Otherwise the input must
already be in the run's store, and :func:`check_stage_inputs` says which is missing and which
stages make it -- before any lock is taken or any model server is started:

=============  ==========================================================================
stage          reads
=============  ==========================================================================
query          the study files only
probabilities  the study files only
extract        Experiment 1's answers of its model x study (``query``)
validate       whatever tables of the study's models exist (``query``, ``extract``,
               ``probabilities``); at least one
merge          the same tables, and validation's flagged rows (``validate``)
fit            every study's analysis table (``merge``)
report         every study's analysis table (``merge``)
=============  ==========================================================================
"""

from __future__ import annotations

from typing import Callable

from pipeline.layout import analysis_stem, stage_keys, validation_keys
from pipeline.plan import STAGE_DEPENDENCIES, Node
from schemas.settings import ModelSpec
from steps.errors import ConfigError
from steps.store import Store
from steps.studies import StudySpec

MODEL_STAGES = tuple(STAGE_DEPENDENCIES)  # the stages that write per model x study tables


def _table_stems(spec: StudySpec, models: dict[str, ModelSpec], scoring: str) -> list[str]:
    return [stage_keys(stage, spec, model, scoring).stem for model in models.values() for stage in MODEL_STAGES]


def missing_inputs(nodes: list[Node], stages: list[str], specs: dict[int, StudySpec], models: dict[str, ModelSpec], scoring: str,
                   exists: Callable[[str], bool], where: Callable[[str], str]) -> list[str]:
    """One line per node whose input neither this run makes nor the store holds (``exists(key)``; ``where(key)``: its URI)."""
    problems: list[str] = []
    made_here = set(stages)
    for node in nodes:
        study = node.study
        if node.stage == "extract" and "query" not in made_here and study is not None and node.model is not None:
            key = stage_keys("query", specs[study], models[node.model], scoring).stem + ".parquet"
            if not exists(key):
                problems.append(f"{node.name}: needs Experiment 1's answers of {node.model} for study {study} ({where(key)}), "
                                "which are not there: run the query stage first (--stages query,extract)")
        reads_tables = node.stage == "validate" or (node.stage == "merge" and "validate" not in made_here)  # said once per study
        if reads_tables and study is not None and not made_here & set(MODEL_STAGES):
            if not any(exists(stem + ".parquet") for stem in _table_stems(specs[study], models, scoring)):
                problems.append(f"{node.name}: no table of study {study} for {', '.join(models)} in {where('')}: run query and/or "
                                "probabilities first (e.g. --stages query,extract,probabilities,validate,merge,report)")
        if node.stage == "merge" and study is not None and "validate" not in made_here:
            key = validation_keys(study)[1]
            if not exists(key):
                problems.append(f"{node.name}: needs validation's flagged rows ({where(key)}), which are not there: "
                                "add validate to the stages (--stages ...,validate,merge)")
        if node.stage in ("fit", "report") and "merge" not in made_here:
            for number in sorted(specs):
                key = analysis_stem(number) + ".parquet"
                if not exists(key):
                    problems.append(f"{node.name}: needs the analysis table of study {number} ({where(key)}), which is not there: "
                                    f"run --stages validate,merge,{node.stage}")
    return problems


def check_stage_inputs(nodes: list[Node], stages: list[str], specs: dict[int, StudySpec], models: dict[str, ModelSpec],
                       scoring: str, store: Store) -> None:
    """ConfigError (exit 2) listing every stage whose inputs are missing and what to run first (see the module docstring)."""
    problems = missing_inputs(nodes, stages, specs, models, scoring, store.exists, store.uri)
    if problems:
        raise ConfigError(f"{len(problems)} stage(s) cannot run: what they read is not in the run, and no stage of this command "
                          "makes it (nothing was started):\n  " + "\n  ".join(problems))
