"""Run the DAG on one machine: validate inputs, start or reach model servers, run nodes.

Order of work (nothing is sent to a model before every input file is valid):
inputs -> run id -> store check -> plan -> servers -> manifest -> nodes (a node starts when its
dependencies have finished; independent nodes run concurrently and share each
model's one client, hence its one concurrency limit) -> tables -> summary.
Every artifact and checkpoint goes through the run's store (a folder or S3), so
stages also work when each runs in its own process or pod.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Optional

import httpx
import pandas as pd

from pipeline.config import DEFAULT_ENDPOINT_CONCURRENCY, ENDPOINT_API_KEY_ENV, RunConfig, checkpoint_store, run_store
from pipeline.embedded import EmbeddedServers, default_workers
from pipeline.layout import manifest_key, stage_keys
from pipeline.manifest import write_manifest
from pipeline.plan import SERVED_STAGES, Node, blocks, build_plan
from pipeline.progress import ProgressReporter
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from pipeline.run_setup import extractor_api_key, load_inputs, resolve_models, run_id_for
from pipeline.study_stages import run_merge, run_report, run_validation, stage_tables
from schemas.settings import ModelSpec
from steps.checkpoint import open_checkpoint
from steps.errors import ConfigError, GraceError, ServerError
from steps.extract import Extractor, run_extract_step
from steps.inputs import StudyTable
from steps.llm_client import LLMClient, RequestFailed, RetryPolicy, make_http_client, redact_url
from steps.probabilities import run_probability_step
from steps.outcome import enforce_failure_threshold
from steps.query import effective_max_tokens, run_query_step
from steps.store import Store
from steps.studies import StudySpec
from steps.tables import read_table, write_table


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
        return self.store.uri()

    @property
    def run_path(self) -> Optional[Path]:
        """The run's local folder (None when the store is S3)."""
        return self.store.local_path()

    @property
    def errors(self) -> list[GraceError]:
        return [r.error for r in self.results if r.error is not None]


async def wait_for_health(http: httpx.AsyncClient, url: str, timeout_s: float, poll_s: float = 2.0) -> None:
    """Poll ``url``/health until it answers 200 (a vLLM sidecar loading its model); ServerError after ``timeout_s``."""
    started = last_log = time.monotonic()
    health = url.rstrip("/") + "/health"
    while True:
        try:
            if (await http.get(health, timeout=10.0)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise ServerError(f"the model server at {redact_url(url)} was not healthy after {timeout_s:.0f} s (GET /health); "
                              "check the vLLM container's log (model download, GPU memory, HF_TOKEN for gated models)")
        if time.monotonic() - last_log >= 30:
            print(f"waiting for {redact_url(health)} ({waited:.0f} s; the model may still be loading)", flush=True)
            last_log = time.monotonic()
        await asyncio.sleep(poll_s)


async def check_endpoint(client: LLMClient, model: ModelSpec) -> Optional[str]:
    """Make sure the server answers and serves ``model``; return its version if it says.

    Raises ServerError naming what is served instead, so a wrong server is caught
    before any row is sent.
    """
    try:
        listing = await client.get_json("/v1/models")
    except RequestFailed as exc:
        raise ServerError(f"model server for {model.name!r} does not answer: {exc.reason}") from exc
    served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
    if model.request_model not in served:
        raise ServerError(
            f"the server at {client.base_urls[0]} serves {served}, not {model.request_model!r} (model {model.name!r}). "
            f"Start it with --served-model-name {model.request_model}, or pass the served name as the model: --endpoint NAME=URL"
        )
    try:
        return str((await client.get_json("/version")).get("version"))
    except RequestFailed:
        return None


def _fingerprint(stage: str, spec: StudySpec, table: StudyTable, model: ModelSpec, config: RunConfig, run_id: str,
                 extractor: Optional[Extractor] = None) -> dict:
    """What a stage's checkpoint must agree with to be resumed."""
    common = {"run_id": run_id, "stage": stage, "input_sha256": table.sha256, "model_id": model.request_model}
    if stage == "query":
        sampling = config.sampling.model_dump() | {"max_tokens": effective_max_tokens(model, config.sampling)}
        return common | {"template_hash": spec.query_prompt.hash, "system_role": model.system_role, "sampling": sampling}
    if stage == "extract":
        return common | {"template_hash": spec.extraction_prompt.hash, "extractor_model": extractor.model if extractor else None,
                         "json_mode": extractor.json_mode if extractor else None}
    return common | {"template_hash": spec.probability_hash, "chat_template": model.chat_template, "scoring": config.scoring}


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


async def _run_step_node(node, spec, table, model, client, config, run_id, store, progress, extractor=None) -> NodeResult:
    checkpoint_key, stem, row_model = stage_keys(node.stage, spec, model, config.scoring)
    checkpoint = open_checkpoint(checkpoint_store(config, run_id), checkpoint_key, _fingerprint(node.stage, spec, table, model, config, run_id, extractor))
    node_progress = _NodeProgress(progress, node.name)
    with checkpoint:
        if node.stage == "query":
            outcome = await run_query_step(table.frame, spec, model, client, config.sampling, checkpoint, run_id,
                                           config.replications, progress=node_progress)
        elif node.stage == "extract":
            outcome = await run_extract_step(_read_raw_responses(spec, model, config, store), spec, extractor, checkpoint,
                                             progress=node_progress)
        else:
            outcome = await run_probability_step(table.frame, spec, model, client, checkpoint, run_id, config.scoring,
                                                 config.min_option_mass, progress=node_progress)
    result = NodeResult(node, outcome.done, outcome.failed, outcome.resumed, outcome.wall_s, outcome.completion_tokens,
                        write_table(outcome.frame, row_model, store, stem))
    try:
        enforce_failure_threshold(outcome, config.max_failed_fraction, f"{node.stage} {model.name} study {spec.number}")
    except GraceError as exc:
        result.error = exc
    return result


def _run_study_node(node: Node, spec: StudySpec, table: StudyTable, models, config: RunConfig, store: Store) -> NodeResult:
    """Validation or merge for one study, over every model's tables in the run's store."""
    started = time.perf_counter()
    result = NodeResult(node)
    tables = stage_tables(spec, models, lambda stage, s, m: stage_keys(stage, s, m, config.scoring), store)
    try:
        if node.stage == "validate":
            result.done, result.failed, result.outputs = run_validation(
                spec, len(table.frame), config.replications, tables, config.min_extraction_confidence, store)
        else:
            result.outputs = run_merge(spec, tables, store)
            result.done = sum(len(t[0]) for t in tables.values())
    except GraceError as exc:
        result.error = exc
        result.failed = 1
    result.wall_s = time.perf_counter() - started
    return result


def _run_report_node(node: Node, studies: list[int], run_id: str, store: Store) -> NodeResult:
    started = time.perf_counter()
    result = NodeResult(node, outputs=[run_report(studies, run_id, store)], done=1)
    result.wall_s = time.perf_counter() - started
    return result


async def _execute(nodes: list[Node], run_node) -> list[NodeResult]:
    """Run ``nodes``; each starts when all its dependencies finished without error."""
    finished: dict[str, asyncio.Task] = {}

    async def start(node: Node) -> NodeResult:
        deps = [await finished[d] for d in node.depends]
        blocked = [d.node.name for d in deps if d.error is not None and blocks(d.node.stage, node.stage)]
        if blocked:
            return NodeResult(node, error=GraceError(f"{node.name} skipped: {', '.join(blocked)} failed"))
        return await run_node(node)

    for node in nodes:
        finished[node.name] = asyncio.ensure_future(start(node))
    return list(await asyncio.gather(*finished.values()))


async def _connect_models(config, models, stack, http, logs: Path) -> tuple[dict[str, LLMClient], dict[str, dict]]:
    """One client per model: an existing endpoint, or embedded servers started here; each checked."""
    api_key = os.environ.get(ENDPOINT_API_KEY_ENV) or None
    clients: dict[str, LLMClient] = {}
    servers: dict[str, dict] = {}
    for name, model in models.items():
        if name in config.endpoints:
            urls, concurrency, version = list(config.endpoints[name]), config.concurrency or DEFAULT_ENDPOINT_CONCURRENCY, None
            clients[name] = LLMClient(http, urls, concurrency, RetryPolicy(), api_key=api_key)
            for url in urls if config.wait_for_endpoint_s else ():
                await wait_for_health(http, url, config.wait_for_endpoint_s)
        else:
            workers = config.embedded_workers or default_workers()
            urls = stack.enter_context(EmbeddedServers(model, workers, logs)).urls
            concurrency, version = config.concurrency or workers, f"llama-cpp-python {metadata.version('llama-cpp-python')}"
            clients[name] = LLMClient(http, urls, concurrency, RetryPolicy())
        version = await check_endpoint(clients[name], model) or version
        servers[name] = {"urls": [redact_url(u) for u in urls], "concurrency": concurrency, "server_version": version,
                         "engine": "endpoint" if name in config.endpoints else model.engine}
    return clients, servers


def _make_extractor(config, clients, stack, http, logs: Path, api_key) -> Extractor:
    """The configured LLM extractor, or (offline default) the embedded model with grammar-constrained JSON."""
    if config.extractor_url:
        client = LLMClient(http, [config.extractor_url], config.extractor_concurrency, RetryPolicy(), api_key=api_key)
        return Extractor(client, config.extractor_model, config.extractor_json_mode)
    embedded_model = load_registry()[EMBEDDED_DEFAULT]
    if EMBEDDED_DEFAULT not in clients:
        workers = config.embedded_workers or default_workers()
        urls = stack.enter_context(EmbeddedServers(embedded_model, workers, logs)).urls
        clients[EMBEDDED_DEFAULT] = LLMClient(http, urls, workers, RetryPolicy())
    return Extractor(clients[EMBEDDED_DEFAULT], embedded_model.request_model, "llama_schema")


def _logs_folder(store: Store, run_id: str) -> Path:
    """Where embedded servers write their logs: the run folder, or a local cache folder for a remote store."""
    local = store.local_path()
    return local / "logs" if local else Path.home() / ".cache" / "grace-pipeline" / "logs" / run_id


async def run_local(config: RunConfig, progress: ProgressReporter, started: float) -> RunResult:
    """Execute the whole run on this machine and return its summary."""
    inputs = load_inputs(config)
    models = resolve_models(config, require_endpoints=any(s in SERVED_STAGES for s in config.stages))  # other stages need no model server
    extractor_key = extractor_api_key(config) if "extract" in config.stages else None  # fails before any model starts
    run_id = run_id_for(config, inputs)
    store = run_store(config, run_id)
    store.check()  # wrong credentials or an unreachable store fail here, before any model is started
    if config.checkpoint_store:
        checkpoint_store(config, run_id).check()
    nodes = build_plan(list(models), sorted(inputs), list(config.stages))
    served = {name: m for name, m in models.items() if any(n.model == name and n.stage in SERVED_STAGES for n in nodes)}
    logs = _logs_folder(store, run_id)

    with ExitStack() as stack:
        http = make_http_client(config.request_timeout_s)
        try:
            clients, servers = await _connect_models(config, served, stack, http, logs)
            extractor = None
            if any(n.stage == "extract" for n in nodes):
                extractor = _make_extractor(config, clients, stack, http, logs, extractor_key)
                servers["extractor"] = {"urls": extractor.client.base_urls, "model": extractor.model, "json_mode": extractor.json_mode}
            write_manifest(checkpoint_store(config, run_id), manifest_key(bool(config.checkpoint_store), nodes), config, run_id, inputs, models, servers)

            async def run_node(node: Node) -> NodeResult:
                if node.study is None:
                    return _run_report_node(node, sorted(inputs), run_id, store)
                spec, table = inputs[node.study]
                if node.model is None:
                    return _run_study_node(node, spec, table, models, config, store)
                return await _run_step_node(node, spec, table, models[node.model], clients.get(node.model), config, run_id, store,
                                            progress, extractor)

            with progress:
                results = await _execute(nodes, run_node)
        finally:
            await http.aclose()
    return RunResult(run_id, store, results, time.perf_counter() - started)
