"""Partial results on one machine: when one model fails, validation, merge and report still run on the models that
finished, the report and the run summary name what failed and why, and the run still fails (its exit code is the
failure's). The cluster's counterpart is in tests/test_workflow.py (FAKE Argo)."""

from __future__ import annotations

import json

import pandas as pd

from pipeline.cli import main
from pipeline.plan import Node, build_plan
from pipeline.runner.outcome import NO_RECORD, outcome_lines, record_setup_failure, run_outcome, write_node_status
from steps.errors import ServerError
from steps.store import open_store
from tests.fakes.fake_openai_server import FakeOpenAIServer


def test_one_failing_model_leaves_the_others_validated_merged_and_reported(tmp_path, capsys):
    with FakeOpenAIServer(model="acme-good") as good, FakeOpenAIServer(model="acme-bad", fault_script=["400"] * 50) as bad:
        code = main(["run", "--models", "acme-good,acme-bad", "--endpoint", f"acme-good={good.url}", "--endpoint", f"acme-bad={bad.url}",
                     "--studies", "2", "--limit", "2", "--max-failed-fraction", "0", "--extractor-url", good.url,
                     "--extractor-model", "acme-good", "--store", str(tmp_path), "--run-id", "partial"])
    out = capsys.readouterr().out
    assert code == 3  # acme-bad's Experiment 1 failed every row: the run fails with that step's code
    run = tmp_path / "partial"
    analysis = pd.read_parquet(run / "analysis" / "study2_analysis.parquet")
    good_rows = analysis[analysis.model_name == "acme-good"]
    assert len(good_rows) == 2 and (good_rows.query_status == "ok").all() and good_rows.Was_Wasnt.notna().all()  # coded too
    summary = json.loads((run / "run_summary.json").read_text())
    failed = {(r["model"], r["stage"]) for r in summary["failed"]}
    assert failed == {("acme-bad", "query")} and summary["missing"] == []
    (record,) = summary["failed"]
    assert record["exit_code"] == 3 and "query acme-bad study 2" in record["error"]
    report = (run / "report.html").read_text()
    assert "Not finished" in report and "acme-bad" in report.split("Not finished")[1].split("</ul>")[0]
    assert "Partial results" in out and "not finished: acme-bad" in out
    statuses = {p.stem: json.loads(p.read_text())["state"] for p in (run / "status").glob("*.json")}
    assert statuses["query-acme-good-study2"] == "done" and statuses["query-acme-bad-study2"] == "failed"
    assert statuses["extract-acme-bad-study2"] == "skipped"  # its extraction needs the answers it does not have
    # refitting the finished run later rewrites its report: what did not finish is still said
    assert main(["fit", str(run), "--fit-resamples", "4", "--fit-starts", "2"]) == 0
    rewritten = (run / "report.html").read_text()
    assert "Not finished" in rewritten and "acme-bad" in rewritten.split("Not finished")[1].split("</ul>")[0]


def test_a_model_whose_server_cannot_be_reached_leaves_the_others_run_merged_and_reported(tmp_path, capsys):
    """On one machine as on the cluster: a model server that is down at start costs that model only."""
    from pipeline.model_server.embedded import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with FakeOpenAIServer(model="acme-good") as good:
        code = main(["run", "--models", "acme-good,acme-down", "--endpoint", f"acme-good={good.url}", "--endpoint", f"acme-down={dead}",
                     "--studies", "2", "--limit", "2", "--extractor-url", good.url, "--extractor-model", "acme-good",
                     "--store", str(tmp_path), "--run-id", "down"])
        good_answers = good.chat_requests
    captured = capsys.readouterr()
    assert code == 4  # the unreachable server's code
    assert good_answers >= 2  # the other model was queried all the same
    run = tmp_path / "down"
    analysis = pd.read_parquet(run / "analysis" / "study2_analysis.parquet")
    assert set(analysis.model_name) == {"acme-good"} and (analysis.query_status == "ok").all() and len(analysis) == 2
    summary = json.loads((run / "run_summary.json").read_text())
    assert {(r["model"], r["stage"]) for r in summary["failed"]} == {("acme-down", "query"), ("acme-down", "probabilities")}
    assert all(r["exit_code"] == 4 and "acme-down" in r["error"] and "does not answer" in r["error"] for r in summary["failed"])
    assert "Not finished" in (run / "report.html").read_text()
    assert "error: acme-down: model server for 'acme-down' does not answer" in captured.err
    assert "(the other models go on)" in captured.err and captured.err.count("does not answer") >= 1
    statuses = {p.stem: json.loads(p.read_text())["state"] for p in (run / "status").glob("*.json")}
    assert statuses["query-acme-good-study2"] == statuses["probabilities-acme-good-study2"] == "done"
    assert statuses["query-acme-down-study2"] == statuses["probabilities-acme-down-study2"] == "failed"
    assert statuses["extract-acme-down-study2"] == "skipped"  # it needs the answers that were never written


def test_when_no_model_server_can_be_reached_the_run_stops_before_any_row(tmp_path, capsys):
    from pipeline.model_server.embedded import free_port

    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    code = main(["run", "--models", "acme-a,acme-b", "--endpoint", f"acme-a={dead[0]}", "--endpoint", f"acme-b={dead[1]}",
                 "--studies", "2", "--limit", "2", "--stages", "query", "--store", str(tmp_path), "--run-id", "alldown"])
    assert code == 4
    assert capsys.readouterr().err.count("does not answer") == 1  # said once, by the CLI
    assert not (tmp_path / "alldown" / "exp1").exists()
    statuses = {p.stem: json.loads(p.read_text())["state"] for p in (tmp_path / "alldown" / "status").glob("*.json")}
    assert statuses == {"query-acme-a-study2": "failed", "query-acme-b-study2": "failed"}


def test_the_outcome_names_failed_missing_and_recovered_nodes(tmp_path):
    store = open_store(str(tmp_path))
    nodes = build_plan(["a", "b", "c"], [1], ["query", "extract", "probabilities"])
    by_name = {n.name: n for n in nodes}
    write_node_status(store, by_name["query-a-study1"], "done", done=6)
    record_setup_failure(store, [n for n in nodes if n.model == "b"], ServerError("the vLLM server of b exited with code 1"), 4)
    outcome = run_outcome(store, nodes, {1: {"a"}})
    assert {(r["model"], r["stage"]) for r in outcome["failed"]} == {("b", "query"), ("b", "extract"), ("b", "probabilities")}
    assert outcome["missing"] == [{"model": "c", "study": 1, "reason": NO_RECORD}]  # killed or never scheduled: no record at all
    assert any("exited with code 1" in line for line in outcome_lines(outcome))
    record_setup_failure(store, [by_name["query-a-study1"], by_name["extract-a-study1"]], ServerError("died"), 4, keep_done=True)
    assert {(r["model"], r["stage"]) for r in run_outcome(store, nodes, {1: {"a"}})["failed"]} >= {("a", "extract")}
    assert not [r for r in run_outcome(store, nodes, {1: {"a"}})["failed"] if r["node"] == "query-a-study1"]  # done stays done
    write_node_status(store, by_name["query-b-study1"], "done")  # a retry that succeeds overwrites the failure
    assert ("b", "query") not in {(r["model"], r["stage"]) for r in run_outcome(store, nodes, {1: {"a", "b"}})["failed"]}
    assert run_outcome(store, nodes, {})["studies_without_analysis"] == [1] and run_outcome(store, nodes, {})["missing"] == []


def test_a_node_name_is_the_key_of_its_record():
    from pipeline.layout import node_status_key

    assert node_status_key(Node("query-a-study1", "query", "a", 1).name) == "status/query-a-study1.json"
