"""Run the DAG on one machine: validate inputs, start or reach model servers, run nodes.

Order of work (nothing is sent to a model before every input file is valid):
inputs -> run id -> store check -> plan -> every stage's inputs there or made by this run
(:mod:`pipeline.runner.stage_inputs`) -> lock of every node (:mod:`steps.run_lock`) ->
every checkpoint's fingerprint -> servers -> manifest -> nodes -> tables -> summary.

Nodes run as tasks of one ``asyncio.TaskGroup``: a node starts when its dependencies have
finished; independent nodes run concurrently and share each model's one client, hence its
one concurrency limit. One failure policy: every node ends with a recorded
:class:`NodeResult` (done, failed, or skipped because a blocking dependency failed), an
error inside a node never cancels its siblings, and the clients close only after every
node ended, so the summary always covers every node. Validation, merge and report run on the models that
finished (:data:`pipeline.plan.PARTIAL_STAGES`): every model node leaves a status record
(:mod:`pipeline.runner.outcome`), and the report and ``run_summary.json`` name what failed and why; the run's
exit code is still the failures'. Blocking work (checkpoint commits,
table writes, the validate/merge/report nodes, S3 retries) runs in worker threads, never
on the event loop, so one slow store does not stall the other nodes or inflate the
latency recorded per row. Every artifact and checkpoint goes through the run's store (a
folder or S3), so stages also work when each runs in its own process or pod.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import httpx
import pandas as pd

from pipeline.config import DEFAULT_ENDPOINT_CONCURRENCY, ENDPOINT_API_KEY_ENV, RunConfig, checkpoint_store, run_store
from pipeline.layout import manifest_key, stage_keys
from pipeline.manifest import reasoning_split, write_manifest
from pipeline.plan import SERVED_STAGES, STAGE_DEPENDENCIES, Node, blocks, build_plan
from pipeline.progress import ProgressReporter
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from pipeline.run_setup import HumanData, Inputs, extractor_api_key, load_run_inputs, resolve_models, run_id_for
from pipeline.runner.outcome import record_setup_failure, write_node_status
from pipeline.runner.stage_inputs import check_stage_inputs
from pipeline.runner.study_stages import run_fits, run_merge, run_report, run_validation, stage_tables
from schemas.settings import ModelSpec
from steps import server_health
from steps.checkpoint import open_checkpoint
from steps.errors import EXIT_OK, EXIT_UNEXPECTED, ConfigError, GraceError, ServerError
from steps.extract import EMBEDDED_JSON_MODE, Extractor, JsonMode, run_extract_step
from steps.http_session import AiohttpSession
from steps.inputs import StudyTable
from steps.llm_client import LLMClient, RequestFailed, RetryPolicy, redact_url
from steps.outcome import enforce_failure_threshold
from steps.probabilities import run_probability_step
from steps.query import effective_max_tokens, run_query_step
from steps.run_lock import RunLock
from steps.store import Store
from steps.studies import StudySpec
from steps.tables import read_table, write_table

ServerStarter = Callable[[ExitStack, ModelSpec, Path, Optional[int]], tuple[list[str], int, str]]
"""Starts a model server this process owns (the embedded model): given the run's ExitStack (which stops it), the
model, a folder for its logs and the requested worker count (None: its default), returns (urls, concurrency,
server version). The CLI passes :func:`pipeline.model_server.embedded.start_embedded`; without one, every model
needs an endpoint."""


def _start_own_server(start_server: Optional[ServerStarter], stack: ExitStack, model: ModelSpec, logs: Path,
                      workers: Optional[int], role: str) -> tuple[list[str], int, str]:
    if start_server is None:
        raise ConfigError(f"{role} {model.name!r} has no endpoint and this command does not start model servers itself: "
                          "give it an endpoint (--endpoint NAME=URL)")
    return start_server(stack, model, logs, workers)


@dataclass
class NodeResult:
    """How one node went (for the summary)."""

    node: Node
    done: int = 0
    failed: int = 0
    resumed: int = 0
    wall_s: float = 0.0
    completion_tokens: int = 0
    outputs: list[str] = field(default_factory=list)
    error: Optional[GraceError] = None


@dataclass
class RunResult:
    """Everything the CLI prints at the end of a run."""

    run_id: str
    store: Store
    results: list[NodeResult]
    wall_s: float

    @property
    def run_uri(self) -> str:
        """Where the run's artifacts are: a local path or an s3:// URL."""
        return self.store.uri()

    @property
    def run_path(self) -> Optional[Path]:
        """The run's local folder (None when the store is S3)."""
        return self.store.local_path()

    @property
    def errors(self) -> list[GraceError]:
        """The errors the nodes raised themselves, in node order."""
        return [r.error for r in self.results if r.error is not None]

    @property
    def exit_code(self) -> int:
        """The most severe code among the nodes' own errors (a node skipped for a failed dependency adds none)."""
        return max((e.exit_code for e in self.errors), default=EXIT_OK)


class NodeSkipped(GraceError):
    """A node did not run because a dependency it needs failed (that failure carries the exit code)."""

    exit_code = EXIT_OK


class NodeCrashed(GraceError):
    """An unexpected error (a bug) inside one node; recorded, the other nodes go on."""

    exit_code = EXIT_UNEXPECTED


async def wait_for_health(http: httpx.AsyncClient, url: str, timeout_s: float, poll_s: float = 2.0) -> None:
    """Poll ``url``/health until it answers 200 (a vLLM server loading its model); ServerError after ``timeout_s``."""
    await server_health.wait_until_healthy(http, url, timeout_s, poll_s=poll_s, hint="check the vLLM container's log "
                                           "(model download, GPU memory, HF_TOKEN for gated models)")


async def check_endpoint(client: LLMClient, model: ModelSpec) -> Optional[str]:
    """Make sure every replica answers and serves ``model``; return the (first replica's) version if it says.

    Raises ServerError naming the replica and what it serves instead, so a wrong server is caught
    before any row is sent (a replica of another model would mix its answers into this model's).
    """
    for replica, url in enumerate(client.base_urls):
        try:
            listing = await client.get_json("/v1/models", replica)
        except RequestFailed as exc:
            raise ServerError(f"model server for {model.name!r} does not answer: {exc.reason}") from exc
        served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
        if model.request_model not in served:
            raise ServerError(
                f"the server at {url} serves {served}, not {model.request_model!r} (model {model.name!r}). "
                f"Start it with --served-model-name {model.request_model}, or pass the served name as the model: --endpoint NAME=URL"
            )
    try:
        return str((await client.get_json("/version")).get("version"))
    except RequestFailed:
        return None


def extractor_identity(config: RunConfig) -> tuple[str, JsonMode]:
    """(model, JSON mode) of the run's LLM extractor, known before it is started: the configured
    endpoint's, or the embedded model's with schema-constrained JSON (the offline default)."""
    if config.extractor_url:
        return config.extractor_model, config.extractor_json_mode
    return load_registry()[EMBEDDED_DEFAULT].request_model, EMBEDDED_JSON_MODE


def _fingerprint(stage: str, spec: StudySpec, table: StudyTable, model: ModelSpec, config: RunConfig, run_id: str) -> dict:
    """What a stage's checkpoint must agree with to be resumed."""
    common = {"run_id": run_id, "stage": stage, "input_sha256": table.sha256, "model_id": model.request_model}
    if stage == "query":
        sampling = config.sampling.model_dump() | {"max_tokens": effective_max_tokens(model, config.sampling)}
        return common | {"template_hash": spec.query_prompt.hash, "system_role": model.system_role, "sampling": sampling}
    if stage == "extract":
        extractor_model, json_mode = extractor_identity(config)
        return common | {"template_hash": spec.extraction_prompt.hash, "extractor_model": extractor_model, "json_mode": json_mode}
    return common | {"template_hash": spec.probability_hash, "reply_prefix": model.reply_prefix, "scoring": config.scoring}


def _step_checkpoint(node: Node, inputs: Inputs, models: dict[str, ModelSpec], config: RunConfig, run_id: str):
    assert node.study is not None and node.model is not None, f"{node.name} is not a model x study step"
    spec, table = inputs[node.study]
    model = models[node.model]
    key = stage_keys(node.stage, spec, model, config.scoring).checkpoint
    return open_checkpoint(checkpoint_store(config, run_id), key, _fingerprint(node.stage, spec, table, model, config, run_id))


def check_checkpoints(nodes: list[Node], inputs: Inputs, models: dict[str, ModelSpec], config: RunConfig, run_id: str) -> None:
    """CheckpointMismatchError for any step checkpoint written with other settings, before any server starts
    (so exit 2 really means that nothing was sent)."""
    for node in nodes:
        if node.model is not None:
            _step_checkpoint(node, inputs, models, config, run_id).check()


def _read_raw_responses(spec: StudySpec, model: ModelSpec, config: RunConfig, store: Store) -> pd.DataFrame:
    stem = stage_keys("query", spec, model, config.scoring).stem
    raw = read_table(store, stem)
    if raw is None:
        raise ConfigError(f"{store.uri(stem + '.parquet')} does not exist: run the query stage first (--stages query,extract)")
    return raw


class _NodeProgress:
    """One node's view of the run's ProgressReporter (what the steps call)."""

    def __init__(self, reporter: ProgressReporter, node: str):
        self.reporter, self.node = reporter, node

    def start(self, total: int, already_done: int) -> None:
        self.reporter.start(self.node, total, already_done)

    def advance(self, ok: bool) -> None:
        self.reporter.advance(self.node, ok)


async def _run_step_node(node, inputs, models, client, config, run_id, store, progress, extractor=None) -> NodeResult:
    spec, table = inputs[node.study]
    model = models[node.model]
    _, stem, row_model = stage_keys(node.stage, spec, model, config.scoring)
    node_progress = _NodeProgress(progress, node.name)
    with _step_checkpoint(node, inputs, models, config, run_id) as checkpoint:
        if node.stage == "query":
            outcome = await run_query_step(table.frame, spec, model, client, config.sampling, checkpoint, run_id,
                                           config.replications, progress=node_progress)
        elif node.stage == "extract":
            raw = await asyncio.to_thread(_read_raw_responses, spec, model, config, store)
            outcome = await run_extract_step(raw, spec, extractor, checkpoint, progress=node_progress)
        else:
            outcome = await run_probability_step(table.frame, spec, model, client, checkpoint, run_id, config.scoring,
                                                 config.min_option_mass, progress=node_progress)
    outputs = await asyncio.to_thread(write_table, outcome.frame, row_model, store, stem)
    result = NodeResult(node, outcome.done, outcome.failed, outcome.resumed, outcome.wall_s, outcome.completion_tokens, outputs)
    try:
        enforce_failure_threshold(outcome, config.max_failed_fraction, f"{node.stage} {model.name} study {spec.number}")
    except GraceError as exc:
        result.error = exc
    return result


def _run_study_node(node: Node, spec: StudySpec, table: StudyTable, models, config: RunConfig, store: Store) -> NodeResult:
    """Validation or merge for one study, over every model's tables in the run's store (blocking: runs in a thread)."""
    result = NodeResult(node)
    tables = stage_tables(spec, models, lambda stage, s, m: stage_keys(stage, s, m, config.scoring), store)
    try:
        if node.stage == "validate":
            result.done, result.failed, result.outputs = run_validation(
                spec, len(table.frame), config.replications, tables, config.min_extraction_confidence, store,
                without_tables=[m for m in models if m not in tables])
        else:
            result.outputs = run_merge(spec, tables, store)
            result.done = sum(len(next(t for t in model_tables if t is not None)) for model_tables in tables.values())
    except GraceError as exc:
        result.error = exc
        result.failed = 1
    return result


def _run_fit_node(node: Node, studies: list[int], run_id: str, store: Store, human: HumanData, config: RunConfig) -> NodeResult:
    """The papers' models fitted to every source of the run (blocking: runs in a thread; CPU only)."""
    outputs, seconds = run_fits(studies, run_id, store, human, config.fit, config.s3_endpoint)
    return NodeResult(node, outputs=outputs, done=len(seconds))


def _run_report_node(node: Node, studies: list[int], run_id: str, store: Store, human: HumanData, models, config: RunConfig) -> NodeResult:
    """The quality report, the human-vs-model comparison table and the run summary (what finished, what failed and why,
    over every model node of the run: :mod:`pipeline.runner.outcome`) (blocking: runs in a thread)."""
    model_nodes = build_plan(list(models), studies, list(STAGE_DEPENDENCIES))
    outputs = run_report(studies, run_id, store, human, config.analysis, status_store=checkpoint_store(config, run_id),
                         model_nodes=model_nodes)
    return NodeResult(node, outputs=outputs, done=1)


def _record_end(store: Store, result: NodeResult) -> None:
    """Leave a model node's status record (blocking); a store that fails here only costs the record, never the run."""
    node, error = result.node, result.error
    state = "done" if error is None else "skipped" if isinstance(error, NodeSkipped) else "failed"
    try:
        write_node_status(store, node, state, error.exit_code if error else 0, str(error) if error else None, result.done, result.failed)
    except GraceError as exc:
        print(f"warning: the status of {node.name} could not be recorded: {exc}", file=sys.stderr)


async def _execute(nodes: list[Node], run_node, on_end=None) -> list[NodeResult]:
    """Run ``nodes`` in one TaskGroup; each starts when its dependencies have ended. Never raises for a node:
    every node ends with a NodeResult (its error recorded; skipped when a blocking dependency failed), handed to
    ``on_end`` (a coroutine function) before any node that depends on it starts."""
    ended: dict[str, asyncio.Future[NodeResult]] = {n.name: asyncio.get_running_loop().create_future() for n in nodes}

    async def one(node: Node) -> None:
        deps = [await ended[d] for d in node.depends]
        blocked = [d.node.name for d in deps if d.error is not None and blocks(d.node.stage, node.stage)]
        started = time.perf_counter()
        if blocked:
            result = NodeResult(node, error=NodeSkipped(f"{node.name} skipped: {', '.join(blocked)} failed"))
        else:
            try:
                result = await run_node(node)
            except GraceError as exc:
                result = NodeResult(node, failed=1, error=exc)
            except Exception as exc:  # a bug: say where, keep the other nodes going, exit 1
                traceback.print_exc(file=sys.stderr)
                result = NodeResult(node, failed=1, error=NodeCrashed(f"{node.name}: unexpected {type(exc).__name__}: {exc}"))
        result.wall_s = result.wall_s or time.perf_counter() - started
        if on_end is not None:
            await on_end(result)
        ended[node.name].set_result(result)

    async with asyncio.TaskGroup() as group:
        for node in nodes:
            group.create_task(one(node), name=node.name)
    return [ended[n.name].result() for n in nodes]


def _client(sessions: list[AiohttpSession], config: RunConfig, urls: list[str], concurrency: int,
            api_key: Optional[str] = None) -> LLMClient:
    """A client with a connection pool of its own, sized to its concurrency (closed with the run's other pools)."""
    sessions.append(AiohttpSession(concurrency, config.request_timeout_s))
    return LLMClient(sessions[-1], urls, concurrency, RetryPolicy(), api_key=api_key)


async def _connect_model(config, name: str, model: ModelSpec, stack, sessions: list[AiohttpSession], logs: Path,
                         start_server: Optional[ServerStarter], api_key: Optional[str]) -> tuple[LLMClient, dict]:
    """A checked client for one model (an existing endpoint, or embedded servers started here) and its manifest entry."""
    if name in config.endpoints:
        urls, concurrency, version = list(config.endpoints[name]), config.concurrency or DEFAULT_ENDPOINT_CONCURRENCY, None
        if config.wait_for_endpoint_s:
            async with httpx.AsyncClient() as probe:
                for url in urls:
                    await wait_for_health(probe, url, config.wait_for_endpoint_s)
        client = _client(sessions, config, urls, concurrency, api_key)
    else:
        urls, workers, version = _start_own_server(start_server, stack, model, logs, config.embedded_workers, "model")
        concurrency = config.concurrency or workers
        client = _client(sessions, config, urls, concurrency)
    version = await check_endpoint(client, model) or version
    server = {"urls": [redact_url(u) for u in urls], "concurrency": concurrency, "server_version": version,
              "engine": "endpoint" if name in config.endpoints else model.engine}
    if model.reasoning:
        server["reasoning_split"] = reasoning_split(model, sidecar=False)
    return client, server


async def _connect_models(config, models, stack, sessions: list[AiohttpSession], logs: Path, start_server: Optional[ServerStarter]
                          ) -> tuple[dict[str, LLMClient], dict[str, dict], dict[str, ServerError]]:
    """One checked client per model, and the models whose server could not be started or reached (ServerError each).

    A model whose server fails does not stop the others: its nodes end with that error, the others run (partial
    results, as on the cluster). A ConfigError (e.g. no endpoint and no way to start one) stops the run.
    """
    api_key = os.environ.get(ENDPOINT_API_KEY_ENV) or None
    clients: dict[str, LLMClient] = {}
    servers: dict[str, dict] = {}
    unavailable: dict[str, ServerError] = {}
    for name, model in models.items():
        try:
            clients[name], servers[name] = await _connect_model(config, name, model, stack, sessions, logs, start_server, api_key)
        except ServerError as exc:
            unavailable[name] = exc
    return clients, servers, unavailable


async def check_extractor(client: LLMClient) -> None:
    """Fail before any row when the LLM extractor cannot be reached (ServerError, exit 4) or refuses the key
    (ConfigError, exit 2). Any other answer to ``GET /v1/models`` (even 404) shows it is reachable."""
    try:
        await client.get_json("/v1/models")
    except RequestFailed as exc:
        if exc.status_code in (401, 403):
            raise ConfigError(f"the LLM extractor refused the API key: {exc.reason}. Check the key in the variable named by "
                              "--extractor-api-key-env") from None
        if exc.status_code is None:
            raise ServerError(f"the LLM extractor cannot be reached: {exc.reason}. Check --extractor-url and that the server "
                              "is running; finished rows are kept, re-run when it answers") from None


async def _make_extractor(config, clients, stack, sessions: list[AiohttpSession], logs: Path, api_key,
                          start_server: Optional[ServerStarter]) -> Extractor:
    """The configured LLM extractor (checked reachable; a pool of its own, sized to --extractor-concurrency), or (offline
    default) the embedded model with grammar-constrained JSON, sharing that model's client when it is also under study."""
    model, json_mode = extractor_identity(config)
    if config.extractor_url:
        client = _client(sessions, config, [config.extractor_url], config.extractor_concurrency, api_key)
        await check_extractor(client)
        return Extractor(client, model, json_mode)
    if EMBEDDED_DEFAULT not in clients:
        urls, workers, _ = _start_own_server(start_server, stack, load_registry()[EMBEDDED_DEFAULT], logs, config.embedded_workers,
                                             "the default extractor")
        clients[EMBEDDED_DEFAULT] = _client(sessions, config, urls, workers)
    return Extractor(clients[EMBEDDED_DEFAULT], model, json_mode)


def _logs_folder(store: Store, run_id: str) -> Path:
    """Where embedded servers write their logs: the run folder, or a local cache folder for a remote store."""
    local = store.local_path()
    return local / "logs" if local else Path.home() / ".cache" / "grace-pipeline" / "logs" / run_id


async def run_local(config: RunConfig, progress: ProgressReporter, started: float,
                    start_server: Optional[ServerStarter] = None, server_info: Optional[dict[str, dict]] = None) -> RunResult:
    """Execute the run's nodes in this process and return its summary (every node's result); models without an
    endpoint are served by ``start_server`` (the CLI passes the embedded model server's). ``server_info``: model -> what
    the caller knows of its server (the cluster's serve step: the vLLM sidecar's arguments), recorded in the manifest."""
    inputs, human = load_run_inputs(config)
    models = resolve_models(config, require_endpoints=any(s in SERVED_STAGES for s in config.stages))  # other stages need no model server
    extractor_key = extractor_api_key(config) if "extract" in config.stages else None  # fails before any model starts
    run_id = run_id_for(config, inputs)
    store = run_store(config, run_id)
    store.check()  # wrong credentials or an unreachable store fail here, before any model is started
    if config.checkpoint_store:
        checkpoint_store(config, run_id).check()
    nodes = build_plan(list(models), sorted(inputs), list(config.stages))
    check_stage_inputs(nodes, list(config.stages), {n: spec for n, (spec, _) in inputs.items()}, models, config.scoring, store)
    served = {name: m for name, m in models.items() if any(n.model == name and n.stage in SERVED_STAGES for n in nodes)}
    logs = _logs_folder(store, run_id)

    with ExitStack() as stack:
        # one run per run id and node, in a folder and in S3 alike (exit 7 naming the holder)
        stack.enter_context(RunLock(checkpoint_store(config, run_id), [n.name for n in nodes], wait_s=config.lock_wait_s,
                                    what=f"grace-pipeline run (stages {','.join(config.stages)})"))
        check_checkpoints(nodes, inputs, models, config, run_id)  # exit 2 before any server starts
        sessions: list[AiohttpSession] = []  # one connection pool per client
        durable = checkpoint_store(config, run_id)
        try:
            try:
                clients, servers, unavailable = await _connect_models(config, served, stack, sessions, logs, start_server)
                if unavailable and len(unavailable) == len(served):
                    raise next(iter(unavailable.values()))  # no model to run: stop here, as before any row
                for name, error in unavailable.items():  # the other models go on; these nodes end with their server's error
                    print(f"error: {name}: {error} (the other models go on)", file=sys.stderr)
                    await asyncio.to_thread(record_setup_failure, durable, [n for n in nodes if n.model == name], error, error.exit_code)
                extractor = None
                if any(n.stage == "extract" for n in nodes):
                    extractor = await _make_extractor(config, clients, stack, sessions, logs, extractor_key, start_server)
                    servers["extractor"] = {"urls": extractor.client.base_urls, "model": extractor.model,
                                            "json_mode": extractor.json_mode}
            except (ServerError, ConfigError) as exc:  # a model server or the extractor: each model node ends with this error
                await asyncio.to_thread(record_setup_failure, durable, nodes, exc, exc.exit_code)
                raise
            for name, info in (server_info or {}).items():
                servers.setdefault(name, {}).update(info)
            await asyncio.to_thread(write_manifest, checkpoint_store(config, run_id), manifest_key(bool(config.checkpoint_store), nodes),
                                    config, run_id, inputs, models, servers, human)

            async def run_node(node: Node) -> NodeResult:
                if node.stage == "fit":
                    return await asyncio.to_thread(_run_fit_node, node, sorted(inputs), run_id, store, human, config)
                if node.study is None:
                    return await asyncio.to_thread(_run_report_node, node, sorted(inputs), run_id, store, human, models, config)
                spec, table = inputs[node.study]
                if node.model is None:
                    return await asyncio.to_thread(_run_study_node, node, spec, table, models, config, store)
                if node.model in unavailable:
                    raise unavailable[node.model]
                return await _run_step_node(node, inputs, models, clients.get(node.model), config, run_id, store, progress, extractor)

            async def on_end(result: NodeResult) -> None:
                if result.node.model is not None:
                    await asyncio.to_thread(_record_end, durable, result)

            with progress:
                results = await _execute(nodes, run_node, on_end)
        finally:
            await asyncio.gather(*(session.aclose() for session in sessions))
    return RunResult(run_id, store, results, time.perf_counter() - started)
