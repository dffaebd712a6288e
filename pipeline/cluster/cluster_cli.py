"""The cluster commands of ``grace-pipeline``: ``cluster-plan`` (the workflow's first step), ``serve`` (a model's
served stages against its one server), ``render`` (the WorkflowTemplate YAML), and ``submit`` (with its cost
model; ``--dry-run`` prints it without submitting) / ``status`` / ``retry`` against an Argo server.

The Argo server, token and namespace come from flags or the argo CLI's environment
(``ARGO_SERVER``, ``ARGO_TOKEN``, ``ARGO_NAMESPACE``); the token is never printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from pipeline.cli_options import add_run_options, config_from_args
from pipeline.runner.local import ServerStarter
from steps.errors import ConfigError, GraceError, WorkflowFailedError

CHART_TEMPLATE_COPY = Path("files") / "workflowtemplate.yaml"


def add_cluster_commands(sub) -> None:
    """Add the cluster sub-commands to ``grace-pipeline``'s sub-parsers."""
    plan = sub.add_parser("cluster-plan", help="(The workflow's first step) validate inputs, fix the run id, write the fan-out items")
    add_run_options(plan)
    plan.add_argument("--out", required=True, metavar="DIR", help="Folder for the plan files the workflow reads")
    plan.add_argument("--gpu-classes", metavar="JSON", help="The WorkflowTemplate's GPU classes (rendered into it; default: the "
                      "classes of the shipped registry)")
    plan.add_argument("--preflight", choices=("true", "false"), default="false",
                      help="Check the cluster before any GPU pod (the workflow passes its `preflight` parameter; default: %(default)s)")
    plan.add_argument("--gpu-pending-minutes", type=float, default=60, metavar="MINUTES",
                      help="How long a GPU step may wait to be scheduled (part of its deadline; default: %(default)s)")
    plan.add_argument("--workflow", metavar="NAME", help="The Argo workflow's name (recorded in the manifest)")

    serve = sub.add_parser("serve", help="(A workflow step) Experiment 1 and 2 of one model, every study, against ONE server start")
    add_run_options(serve)
    serve.add_argument("--vllm-dir", metavar="DIR", help="Serve through the pod's vLLM sidecar: write its arguments here and watch it")
    serve.add_argument("--vllm-port", type=int, default=8000, help="The sidecar's port (default: %(default)s)")

    render = sub.add_parser("render", help="Write the Argo WorkflowTemplate YAML (and the Helm chart's copy)")
    render.add_argument("--output", "-o", default="-", metavar="FILE", help="Where to write it (default: standard output)")
    render.add_argument("--chart", metavar="DIR", help=f"Also refresh the chart's copy, DIR/{CHART_TEMPLATE_COPY} (charts/grace-pipeline)")
    render.add_argument("--namespace", help="metadata.namespace of the template (default: none, set by kubectl/helm)")
    render.add_argument("--registry", metavar="FILE", help="A registry YAML merged over the shipped one whose models need GPU "
                        "classes (GPU count, memory, node labels) the shipped lineup has not: the template gets them")

    def argo_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--argo-server", metavar="URL", help="Argo server, e.g. https://argo.example.org (default: $ARGO_SERVER)")
        parser.add_argument("--argo-token", metavar="TOKEN", help="Bearer token (default: $ARGO_TOKEN); never printed")
        parser.add_argument("--namespace", "-n", help="Namespace of the workflows (default: $ARGO_NAMESPACE, else 'default')")
        parser.add_argument("--insecure", action="store_true", default=None, help="Do not verify the server's TLS certificate")

    submit = sub.add_parser("submit", help="Submit a run of the WorkflowTemplate to Argo and print its name and UI link")
    argo_options(submit)
    submit.add_argument("--parameter", "-p", action="append", default=[], metavar="NAME=VALUE",
                        help="A workflow parameter (repeat), e.g. -p models=gemma-2-9b-it,llama-3.1-8b-instruct -p limit=10")
    submit.add_argument("--template", default=None, help="WorkflowTemplate name (default: grace-pipeline)")
    submit.add_argument("--wait", action="store_true", help="Follow the workflow until it finishes (exit 8 if it ended Failed or Error)")
    submit.add_argument("--dry-run", action="store_true", help="Check the parameters and print the cost model; submit nothing")
    submit.add_argument("--no-preflight", action="store_true",
                        help="Do not check the cluster first (here with your kubeconfig, and in the workflow's plan step): e.g. GPU "
                             "nodes that autoscale from zero")
    submit.add_argument("--study-rows", metavar="N=ROWS,...", help="Rows per study for the cost model, e.g. 1=300,2=2424 "
                        "(default: read the study files: the bundled examples, or -p studyN=s3://... with your S3 credentials)")

    for name, help_text in (("status", "Show a workflow's phase and per-node state"),
                            ("retry", "Re-run the failed nodes of a workflow (succeeded nodes and their artifacts are kept)")):
        command = sub.add_parser(name, help=help_text)
        argo_options(command)
        command.add_argument("workflow", metavar="NAME", help="Workflow name, as printed by submit")
        if name == "retry":
            command.add_argument("--wait", action="store_true", help="Follow the workflow until it finishes")


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    """-p NAME=VALUE pairs, checked against the template's parameters, their enums and the model registry before anything is sent."""
    from pipeline.cluster.workflow import PARAMETERS

    known = {p.name: p for p in PARAMETERS}
    parameters: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in known:
            raise ConfigError(f"unknown workflow parameter {name!r} (expected NAME=VALUE); known: {', '.join(known)}")
        if known[name].enum and value not in known[name].enum:
            raise ConfigError(f"parameter {name}={value!r} must be one of {list(known[name].enum)}")
        parameters[name] = value
    if "models" in parameters:  # a typo would otherwise fail only in the workflow's plan step
        run_models(parameters)
    return parameters


def _endpoint_names(parameters: dict[str, str]) -> set[str]:
    return {pair.split("=", 1)[0].strip() for pair in parameters.get("endpoints", "").split(";") if "=" in pair}


def run_models(parameters: dict[str, str]):
    """The submitted run's models, resolved as every step of the workflow resolves them (:func:`pipeline.run_setup.models_for`
    with the ``registry`` parameter); None when the registry cannot be read from here (no S3 credentials: the plan step
    checks them). ConfigError naming unknown models."""
    from pipeline.cluster.workflow import PARAMETERS
    from pipeline.registry import load_registry
    from pipeline.run_setup import models_for

    defaults = {p.name: p.default for p in PARAMETERS}
    names = [n.strip() for n in parameters.get("models", defaults["models"]).split(",") if n.strip()]
    registry = parameters.get("registry") or None
    served = _endpoint_names(parameters)
    try:
        known = load_registry(registry)
    except ConfigError:
        raise
    except (GraceError, OSError) as exc:  # the registry in S3, without credentials (or the endpoint) here
        if not (registry and registry.startswith("s3://")):
            raise
        print(f"note: the registry {registry} cannot be read from here ({type(exc).__name__}); the workflow's plan step "
              "checks the models")
        return None
    unknown = [n for n in names if n not in known and n not in served]
    if unknown:
        raise ConfigError(f"unknown model(s) {unknown}: use registry names (`grace-pipeline models"
                          f"{' --registry ' + registry if registry else ''}`), add them to your registry (-p registry=s3://...), "
                          "or list them in -p endpoints=MODEL=URL")
    return models_for(names, registry, served)


def _study_rows(parameters: dict[str, str], override: Optional[str]) -> dict[int, int]:
    """Rows per study of the submitted run (after ``limit``), for the cost model."""
    from pipeline.cluster.workflow import PARAMETERS
    from pipeline.config import RunConfig, example_study_path
    from pipeline.registry import EMBEDDED_DEFAULT
    from pipeline.run_setup import load_inputs

    defaults = {p.name: p.default for p in PARAMETERS}
    get = lambda name: parameters.get(name, defaults[name])  # noqa: E731
    studies = [int(n) for n in get("studies").split(",") if n.strip()]
    limit = int(get("limit") or 0)
    if override:
        try:
            given = {int(k): int(v) for k, v in (pair.split("=", 1) for pair in override.split(","))}
        except ValueError as exc:
            raise ConfigError(f"--study-rows must look like 1=300,2=2424, got {override!r}") from exc
        return {n: min(given[n], limit) if limit else given[n] for n in studies if n in given}
    config = RunConfig(studies={n: get(f"study{n}") or example_study_path(n) for n in studies}, models=(EMBEDDED_DEFAULT,),
                       row_limit=limit or None)
    try:
        return {n: len(table.frame) for n, (_, table) in load_inputs(config).items()}
    except GraceError as exc:
        raise ConfigError(f"cannot read the study files for the cost model ({exc}); give their sizes: --study-rows 1=300,2=2424") from exc


def cost_report(parameters: dict[str, str], study_rows: Optional[str]) -> str:
    """The cost model of a submission: this workflow (one load per model, weights cached) and the per-step layout it replaced."""
    from pipeline.cluster.cost import estimate, format_costs
    from pipeline.cluster.workflow import PARAMETERS

    defaults = {p.name: p.default for p in PARAMETERS}
    resolved = run_models(parameters)
    if resolved is None:
        raise ConfigError("the run's registry cannot be read here, so neither can its models' GPU needs")
    served = _endpoint_names(parameters)
    names = list(resolved)
    models = [m for n, m in resolved.items() if n not in served and m.engine == "vllm" and m.gpus]
    rows = _study_rows(parameters, study_rows)
    replications = int(parameters.get("replications", defaults["replications"]) or 1)
    now = [estimate(m, rows, replications) for m in models]
    before = sum(estimate(m, rows, replications, layout="per-step").gpu_minutes for m in models)
    on_cpu = [n for n in names if n not in {m.name for m in models}]
    lines = [format_costs(now, f"Cost model ({', '.join(f'study {n}: {r} rows' for n, r in rows.items())}; "
                               "assumptions in the registry; first run of a model on this cluster: weights downloaded once):"),
             f"  a warm weight cache saves the downloads: "
             f"{sum(estimate(m, rows, replications, cache_warm=True).gpu_minutes for m in models):.0f} GPU-min; "
             f"one vLLM start per stage x study without a cache would cost {before:.0f} GPU-min"]
    if on_cpu:
        lines.append(f"  no GPU: {', '.join(on_cpu)} (existing endpoint or the embedded CPU model)")
    return "\n".join(lines)


def submit_preflight(args: argparse.Namespace, parameters: dict[str, str], client) -> None:
    """Check the cluster with this machine's Kubernetes credentials before anything is submitted (pipeline.cluster.preflight);
    PreflightRefused (exit 2) naming each problem and its fix. Without credentials, say so and leave it to the plan step."""
    from urllib.parse import urlparse

    from pipeline.cluster import names
    from pipeline.cluster.kube_api import from_environment
    from pipeline.cluster.preflight import conclude, submit_checks
    from pipeline.cluster.workflow import PARAMETERS

    api = from_environment()
    if api is None:
        print("preflight: no Kubernetes credentials here (kubeconfig): the cluster is checked by the workflow's plan step, before any "
              "GPU pod")
        return
    namespace = client.namespace
    defaults = {p.name: p.default for p in PARAMETERS}
    get = lambda name: parameters.get(name, defaults[name])  # noqa: E731
    models = run_models(parameters)
    served = _endpoint_names(parameters)
    gpu_models = None if models is None else {n: m for n, m in models.items() if m.engine == "vllm" and m.gpus and n not in served}
    secrets: dict[str, tuple[tuple[str, ...], str]] = {names.S3_SECRET[0]: (names.S3_SECRET[1:], "every step's and Argo's S3 credentials")}
    if gpu_models is None or any(m.gated for m in gpu_models.values()):
        secrets[names.HF_SECRET[0]] = (names.HF_SECRET[1:], "the Hugging Face token gated models are downloaded with")
    extractor = get("extractor-url")
    if extractor and urlparse(extractor).hostname not in ("127.0.0.1", "localhost", "::1"):
        secrets[names.EXTRACTOR_SECRET[0]] = (names.EXTRACTOR_SECRET[1:], f"the API key of the extractor at {extractor}")
    config_maps = {names.ARTIFACT_REPOSITORY[0]: (names.ARTIFACT_REPOSITORY[1], "the template's artifact repository"),
                   names.STORE_CONFIGMAP: ("", "the steps' store settings")}
    token = client.bearer_token
    argo_identity = api.with_token(token, "the Argo token (ARGO_TOKEN)") if token else None
    print(f"preflight: checking namespace {namespace} as {api.where} ({api.host})")
    conclude(submit_checks(api, namespace, args.template or names.TEMPLATE_NAME, gpu_models, secrets, config_maps,
                           names.MODEL_CACHE_PVC, argo_identity))


def _client(args: argparse.Namespace):
    from pipeline.cluster.argo_api import ArgoClient

    return ArgoClient.from_env(host=args.argo_server, token=args.argo_token, namespace=args.namespace, insecure=args.insecure)


def print_nodes(console: Console, nodes) -> None:
    """Print a table of the workflow's pods, retries and failed nodes (template, phase, exit code, message)."""
    table = Table(title="Workflow nodes")
    for column in ("node", "template", "phase", "exit", "message"):
        table.add_column(column)
    for node in nodes:
        if node.type in ("Pod", "Retry") or node.phase in ("Failed", "Error"):
            table.add_row(node.name, node.template, node.phase, node.exit_code or "", node.message)
    console.print(table)


def _follow(console: Console, client, name: str) -> int:
    """Wait for the workflow; 0 when it Succeeded, else WorkflowFailedError (exit 8)."""
    phase = client.wait(name, on_update=lambda nodes: print_nodes(console, nodes))
    console.print(f"workflow {name}: {phase}")
    if phase != "Succeeded":
        raise WorkflowFailedError(f"workflow {name} ended {phase}: `grace-pipeline status {name}` shows which node failed and why; "
                                  f"`grace-pipeline retry {name}` re-runs only the failed nodes ({client.ui_link(name)})")
    return 0


def run_cluster_command(args: argparse.Namespace, console: Console, start_server: Optional[ServerStarter] = None) -> Optional[int]:
    """Run ``args.command`` if it is a cluster command and return its exit code; None otherwise."""
    if args.command == "cluster-plan":
        from pipeline.cluster.cluster_plan import cluster_plan
        from pipeline.cluster.placement import parse_classes

        plan = cluster_plan(config_from_args(args), Path(args.out),
                            template_classes=parse_classes(args.gpu_classes) if args.gpu_classes else None,
                            check_cluster=args.preflight == "true", pending_minutes=args.gpu_pending_minutes, workflow=args.workflow)
        routed = {k.removesuffix(".json"): v for k, v in plan.items() if isinstance(v, list) and v and k != "study-items.json"}
        console.print(f"run {plan['run-id']}: studies {plan['study-items.json']}; models to run: {routed or 'none (all complete)'}")
        return 0
    if args.command == "serve":
        import asyncio
        import sys
        import time

        from pipeline.cluster.serve import serve
        from pipeline.progress import ProgressReporter
        from pipeline.runner.summary import print_summary

        started = time.perf_counter()
        result = asyncio.run(serve(config_from_args(args), ProgressReporter(Console(stderr=True)), started,
                                   Path(args.vllm_dir) if args.vllm_dir else None, args.vllm_port,
                                   start_server=start_server))
        print_summary(console, result)
        sys.stdout.flush()
        return max((e.exit_code for e in result.errors), default=0)
    if args.command == "render":
        from pipeline.cluster.workflow import render_yaml

        text = render_yaml(args.namespace, args.registry)
        if args.output == "-":
            print(text, end="")
        else:
            Path(args.output).write_text(text)
        if args.chart:
            copy = Path(args.chart) / CHART_TEMPLATE_COPY
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(text)
            console.print(f"wrote {copy}")
        return 0
    if args.command == "submit":
        from pipeline.cluster.workflow import TEMPLATE_NAME

        parameters = parse_parameters(args.parameter)
        try:
            print(cost_report(parameters, args.study_rows))
        except ConfigError as exc:
            if args.dry_run:
                raise
            print(f"cost model unavailable: {exc}")  # the workflow's plan step prints it from the real files
        if args.dry_run:
            print(json.dumps(parameters) if parameters else "  (template defaults)")
            print("dry run: nothing submitted")
            return 0
        client = _client(args)
        if args.no_preflight:
            parameters.setdefault("preflight", "false")  # the plan step's too
        else:
            submit_preflight(args, parameters, client)
        name = client.submit(args.template or TEMPLATE_NAME, parameters, generate_name="grace-pipeline-")
        print(f"submitted {name}")
        print(f"  {client.ui_link(name)}")
        print(json.dumps(parameters) if parameters else "  (template defaults)")
        return _follow(console, client, name) if args.wait else 0
    if args.command == "status":
        client = _client(args)
        nodes = client.nodes(args.workflow)
        console.print(f"workflow {args.workflow}: {client.phase(args.workflow) or 'Pending'}  {client.ui_link(args.workflow)}")
        print_nodes(console, nodes)
        return 0
    if args.command == "retry":
        client = _client(args)
        client.retry(args.workflow)
        print(f"retrying the failed nodes of {args.workflow}: {client.ui_link(args.workflow)}")
        return _follow(console, client, args.workflow) if args.wait else 0
    return None
