"""The cluster cost model (pipeline/cluster/cost.py) and where models are placed (pipeline/cluster/placement.py)."""

from __future__ import annotations

import pytest

from pipeline.cluster.cost import estimate, format_costs, hub_download_gb_per_minute, startup_timeout_s
from pipeline.cluster.placement import gpu_class, gpu_classes
from pipeline.registry import load_registry

LINEUP = [m for m in load_registry().values() if m.engine == "vllm"]
ROWS = {1: 300, 2: 2424}  # the real study files


def test_one_load_per_model_instead_of_one_per_served_stage_and_study():
    for model in LINEUP:
        once, per_step = estimate(model, ROWS), estimate(model, ROWS, layout="per-step")
        assert (once.loads, per_step.loads) == (1, 4)
        assert once.downloaded_gb == model.weights_gb and per_step.downloaded_gb == 4 * model.weights_gb
        assert once.work_gpu_minutes == per_step.work_gpu_minutes  # the same rows, only the loads differ
        assert estimate(model, ROWS, cache_warm=True).downloaded_gb == 0


def test_gpu_minutes_follow_the_documented_formula():
    model = load_registry()["llama-3.1-70b-instruct"]
    cost = estimate(model, ROWS, replications=2)
    download = model.weights_gb / hub_download_gb_per_minute()
    assert cost.load_gpu_minutes == pytest.approx(4 * (model.load_minutes + download))
    assert cost.work_gpu_minutes == pytest.approx(4 * (2724 * 2 / model.answers_per_minute + 2724 / model.scored_rows_per_minute))


def test_the_lineup_costs_much_less_than_before():
    before = sum(estimate(m, ROWS, layout="per-step").gpu_minutes for m in LINEUP)
    after = sum(estimate(m, ROWS).gpu_minutes for m in LINEUP)
    assert after < 0.6 * before
    table = format_costs([estimate(m, ROWS) for m in LINEUP], "lineup")
    assert "llama-3.1-70b-instruct" in table and "GPU-hours" in table.splitlines()[-1]


def test_startup_wait_is_sized_per_model():
    registry = load_registry()
    small, big = startup_timeout_s(registry["gemma-2-2b-it"]), startup_timeout_s(registry["llama-3.1-70b-instruct"])
    assert 5 * 60 < small < big < 60 * 60  # never the hour every model used to get
    assert startup_timeout_s(registry["gemma-2-2b-it"].model_copy(update={"startup_timeout_minutes": 7})) == 420


def test_gpu_classes_keep_big_models_off_small_gpus():
    registry = load_registry()
    classes = {c.name for c in gpu_classes(registry.values())}
    assert classes == {"gpu1-15g", "gpu1-22g", "gpu2-40g", "gpu4-78g"}
    assert gpu_class(registry["llama-3.1-70b-instruct"]).name == "gpu4-78g"
    custom = registry["gemma-2-9b-it"].model_copy(update={"node_selector": {"pool": "a100"}})
    assert gpu_class(custom).name.startswith("gpu1-22g-") and dict(gpu_class(custom).node_selector) == {"pool": "a100"}
