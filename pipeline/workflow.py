"""The Argo WorkflowTemplate of the SAME DAG the local runner executes, built with Hera.

Stage order and dependencies come from :mod:`pipeline.plan`: every stage of
``STAGE_DEPENDENCIES`` becomes a task fanned out over model x study items (``withParam``
from the ``plan`` task), every study stage a task fanned out over studies, every run stage
one task. A stage that needs a model server is split by who serves the model: ``query``
runs items whose model gets a vLLM sidecar on a GPU node, ``query-on-endpoint`` items that
use an existing endpoint (or the embedded CPU model). ``extract`` holds a namespace-wide
mutex: one extraction job at a time in the cluster (a shared API rate limit).

Every step is a Container template calling ``grace-pipeline`` in the steps image, with
the same arguments a local run takes. Step outputs are key-only S3 artifacts in the
workflow's artifact repository (``artifactRepositoryRef``: no endpoint or credential in
this YAML), not archived, at ``grace-runs/<run id>/<stage folder>/<file>`` - the layout of
a local run's store. Checkpoints go straight to the durable store
(``$GRACE_CHECKPOINT_STORE`` from the ``grace-pipeline-store`` ConfigMap), so a retried pod
resumes. Exit codes 4 (model server) and 6 (storage), a killed pod (137/143) and Argo
errors are retried with exponential backoff; bad input (2), too many failed rows (3) and
broken outputs (5) are not. Secrets come only from Kubernetes Secret references.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from hera.workflows import DAG, Container, Env, Parameter, S3Artifact, SecretEnv, Task, UserContainer, WorkflowTemplate
from hera.workflows import models as m
from hera.workflows.archive import NoneArchiveStrategy
from hera.workflows.env_from import ConfigMapEnvFrom
from hera.workflows.retry_strategy import RetryStrategy

from pipeline import __version__
from pipeline.config import DEFAULT_ENDPOINT_CONCURRENCY, DEFAULT_EXTRACTOR_CONCURRENCY, DEFAULT_EXTRACTOR_MODEL
from pipeline.layout import COMPARISON_STEM, REPORT_KEY, STAGE_FOLDERS
from pipeline.plan import NON_BLOCKING_STAGES, RUN_STAGES, SERVED_STAGES, STAGE_DEPENDENCIES, STUDY_STAGE_DEPENDENCIES
from schemas.probabilities import ScoringMethod
from schemas.settings import DEFAULT_MAX_TOKENS, DEFAULT_SEED, DEFAULT_TEMPERATURE
from steps.errors import RunLockedError, ServerError, StorageError
from steps.extract import JSON_MODES
from steps.human import HUMAN_FORMATS
from steps.query import DEFAULT_MAX_FAILED_FRACTION
from steps.studies import available_studies

TEMPLATE_NAME = "grace-pipeline"
STEPS_IMAGE = f"ghcr.io/grace-pipeline/steps:{__version__}"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"  # pinned; see images/README.md before changing it
KEY_PREFIX = "grace-runs"  # artifact keys: grace-runs/<run id>/..., as a local --store s3://<bucket>/grace-runs
WORKDIR = "/grace/runs"  # the step's local store; artifacts are placed at the same relative paths
PLAN_DIR = "/tmp/grace-plan"
SERVICE_ACCOUNT = "grace-pipeline-workflow"
ARTIFACT_REPOSITORY = ("grace-artifact-repository", "grace-s3")  # ConfigMap, key
STORE_CONFIGMAP = "grace-pipeline-store"
S3_SECRET = ("grace-s3-credentials", "accessKey", "secretKey")
HF_SECRET = ("grace-hf-token", "token")
EXTRACTOR_SECRET = ("grace-extractor", "api-key")
ENDPOINT_SECRET = ("grace-endpoint", "api-key")
EXTRACTION_MUTEX = "grace-pipeline-extraction"
VLLM_PORT = 8000
HEALTH_TIMEOUT_S = 3600
TRANSIENT_EXIT_CODES = (ServerError.exit_code, StorageError.exit_code, RunLockedError.exit_code, 137, 143)


@dataclass(frozen=True)
class WorkflowParameter:
    name: str
    default: str
    description: str
    enum: tuple[str, ...] = ()


def _study_sets() -> tuple[str, ...]:
    studies = [str(n) for n in available_studies()]
    return (",".join(studies), *studies)


PARAMETERS = (
    WorkflowParameter("models", "llama-3.1-8b-instruct", "Comma-separated model registry names (`grace-pipeline models` lists them), "
                      "e.g. gemma-2-9b-it,llama-3.1-8b-instruct,deepseek-r1-distill-llama-8b"),
    WorkflowParameter("studies", _study_sets()[0], "Which studies to run", _study_sets()),
    *(WorkflowParameter(f"study{n}", "", f"Study {n} CSV as s3://bucket/key (empty: the example stimuli in the image)")
      for n in available_studies()),
    *(WorkflowParameter(f"human{n}", "", f"Human data for study {n} as s3://bucket/key, compared with the models in the report "
                        f"and the comparison table (empty: none)") for n in HUMAN_FORMATS),
    WorkflowParameter("endpoints", "", "Models served by an existing OpenAI-compatible endpoint instead of a vLLM sidecar: "
                      "MODEL=URL;MODEL=URL (empty: a sidecar per step). API key from the grace-endpoint Secret"),
    WorkflowParameter("limit", "0", "Use only the first N rows of each study file (0: all rows)"),
    WorkflowParameter("replications", "1", "Samples per row, each with its own recorded seed"),
    WorkflowParameter("temperature", str(DEFAULT_TEMPERATURE), "Sampling temperature for Experiment 1"),
    WorkflowParameter("max-tokens", str(DEFAULT_MAX_TOKENS), "Max generated tokens per answer (reasoning models use their registry value if larger)"),
    WorkflowParameter("seed", str(DEFAULT_SEED), "Run seed; each row x replication gets its own recorded seed"),
    WorkflowParameter("registry", "", "Your model registry YAML as s3://bucket/key, merged over the shipped one (new names add "
                      "models; a shipped name gets the fields you give). Empty: the shipped registry"),
    WorkflowParameter("scoring", "exact", "Experiment 2 method: exact scores each option's full continuation; first-token is a "
                      "repaired first-token variant and seed-literal the seed's method verbatim, both for comparison only",
                      typing.get_args(ScoringMethod)),
    WorkflowParameter("concurrency", str(DEFAULT_ENDPOINT_CONCURRENCY), "Requests in flight per model server"),
    WorkflowParameter("max-failed-fraction", str(DEFAULT_MAX_FAILED_FRACTION), "A step fails when more than this share of its rows failed"),
    WorkflowParameter("extractor-url", "https://api.deepseek.com", "OpenAI-compatible base URL of the structured-extraction LLM "
                      "(key from the grace-extractor Secret)"),
    WorkflowParameter("extractor-model", DEFAULT_EXTRACTOR_MODEL, "Extractor model name"),
    WorkflowParameter("extractor-json-mode", "json_object", "How the extractor is asked for JSON: json_object (DeepSeek API), "
                      "json_schema (vLLM/OpenAI), llama_schema (llama.cpp)", JSON_MODES),
    WorkflowParameter("extractor-concurrency", str(DEFAULT_EXTRACTOR_CONCURRENCY), "Extractor requests in flight (one extraction job runs at a time)"),
    WorkflowParameter("run-id", "", "Name of the run (empty: derived from inputs, prompts and sampling, so re-submitting resumes)"),
    WorkflowParameter("steps-image", STEPS_IMAGE, "The grace-pipeline steps image"),
)


def _wf(name: str) -> str:
    return f"{{{{workflow.parameters.{name}}}}}"


def _in(name: str) -> str:
    return f"{{{{inputs.parameters.{name}}}}}"


def common_run_args() -> list[str]:
    """Options every ``grace-pipeline run`` step gets from the workflow's parameters (which studies and models: per step)."""
    args = [f"--study{n}={_wf(f'study{n}')}" for n in available_studies()]
    for option in ("registry", "limit", "replications", "temperature", "max-tokens", "seed", "scoring", "concurrency", "max-failed-fraction",
                   "extractor-url", "extractor-model", "extractor-json-mode", "extractor-concurrency"):
        args.append(f"--{option}={_wf(option)}")
    return args + ["--store", WORKDIR]


STEPS_UID = 10001  # the steps image's user (images/steps.Dockerfile)
STEPS_SECURITY = m.SecurityContext(run_as_non_root=True, run_as_user=STEPS_UID, allow_privilege_escalation=False,
                                   capabilities=m.Capabilities(drop=["ALL"]))


def _step_env(stage: str) -> list:
    """S3 credentials for every step; the extractor's key only for extract, the endpoints' key only where models are served."""
    access, secret = S3_SECRET[1:]
    env = [SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name=S3_SECRET[0], secret_key=access),
           SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name=S3_SECRET[0], secret_key=secret)]
    if stage == "extract":
        env.append(SecretEnv(name="DEEPSEEK_API_KEY", secret_name=EXTRACTOR_SECRET[0], secret_key=EXTRACTOR_SECRET[1], optional=True))
    if stage in SERVED_STAGES:
        env.append(SecretEnv(name="GRACE_ENDPOINT_API_KEY", secret_name=ENDPOINT_SECRET[0], secret_key=ENDPOINT_SECRET[1], optional=True))
    return env + [Env(name="PYTHONUNBUFFERED", value="1")]


def _steps_container(name: str, stage: str, args: list[str], work_volume: bool = True, **options) -> Container:
    """A template running ``grace-pipeline ARGS`` in the steps image as its non-root user, retried when transient."""
    requests = {"cpu": "500m", "memory": "1Gi"} if stage == "plan" else {"cpu": "1", "memory": "2Gi"}
    return Container(name=name, image=_wf("steps-image"), command=["grace-pipeline"], args=args, env=_step_env(stage),
                     env_from=[ConfigMapEnvFrom(name=STORE_CONFIGMAP)], security_context=STEPS_SECURITY, retry_strategy=_retry(),
                     resources=m.ResourceRequirements(requests=requests),
                     volume_mounts=[m.VolumeMount(name="work", mount_path="/grace")] if work_volume else None, **options)


def _retry() -> RetryStrategy:
    codes = ", ".join(str(c) for c in TRANSIENT_EXIT_CODES)
    return RetryStrategy(
        limit="3", retry_policy="Always",
        expression=f"lastRetry.status == 'Error' or (lastRetry.status == 'Failed' and asInt(lastRetry.exitCode) in [{codes}])",
        backoff=m.Backoff(duration="1m", factor="2", max_duration="1h"),
    )


def _artifact(name: str, relative: str, optional: bool = False) -> S3Artifact:
    """A key-only S3 artifact at ``relative`` (below the run) both in the pod and in the repository."""
    return S3Artifact(name=name, path=f"{WORKDIR}/{_in('run-id')}/{relative}", key=f"{KEY_PREFIX}/{_in('run-id')}/{relative}",
                      archive=NoneArchiveStrategy(), optional=optional or None)


def _table_artifacts(prefix: str, stem_param: str) -> list[S3Artifact]:
    return [_artifact(f"{prefix}-{ext}", f"{_in(stem_param)}.{ext}") for ext in ("parquet", "csv")]


ITEM_FIELDS = ("model", "slug", "study", "hf_id", "served_name", "dtype", "tp", "gpus", "max_len", "shm", "node_selector", "endpoint",
               "raw_stem", "structured_stem", "probabilities_stem")


def _item_inputs() -> list[Parameter]:
    return [Parameter(name="run-id"), *(Parameter(name=f.replace("_", "-")) for f in ITEM_FIELDS)]


def _vllm_sidecar() -> dict:
    """Template options for a vLLM sidecar holding the GPUs, arguments from the item (i.e. the model registry)."""
    return {
        "sidecars": [UserContainer(
            name="vllm", image=VLLM_IMAGE, command=["python3", "-m", "vllm.entrypoints.openai.api_server"],
            args=["--model", _in("hf-id"), "--served-model-name", _in("served-name"), "--dtype", _in("dtype"),
                  "--tensor-parallel-size", _in("tp"), "--max-model-len", _in("max-len"), "--port", str(VLLM_PORT),
                  "--max-logprobs", "20"],
            env=[SecretEnv(name="HF_TOKEN", secret_name=HF_SECRET[0], secret_key=HF_SECRET[1], optional=True)],
            resources=m.ResourceRequirements(requests={"cpu": "4", "memory": "32Gi"}, limits={"nvidia.com/gpu": _in("gpus")}),
            volume_mounts=[m.VolumeMount(name="dshm", mount_path="/dev/shm"),
                           m.VolumeMount(name="hf-cache", mount_path="/root/.cache/huggingface")],
        )],
        "tolerations": [m.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        "pod_spec_patch": ('{"nodeSelector": ' + _in("node-selector") + ', "volumes": [{"name": "dshm", "emptyDir": '
                           '{"medium": "Memory", "sizeLimit": "' + _in("shm") + '"}}]}'),
    }


def _model_step(stage: str, sidecar: bool) -> Container:
    """``stage`` for one model x study: with a vLLM sidecar on a GPU node, or against an existing endpoint
    (extract: neither, it talks to the extractor)."""
    endpoint = f"http://localhost:{VLLM_PORT}" if sidecar else _in("endpoint")
    args = ["run", "--stages", stage, "--models", _in("model"), "--studies", _in("study"), "--run-id", _in("run-id"),
            *(["--endpoint", f"{_in('model')}={endpoint}"] if stage in SERVED_STAGES else [f"--endpoints={_wf('endpoints')}"]),
            *common_run_args()]
    inputs: list = _item_inputs()
    if stage == "extract":
        inputs += _table_artifacts("raw", "raw-stem")
    outputs = _table_artifacts({"query": "raw", "extract": "structured", "probabilities": "probabilities"}[stage],
                               {"query": "raw-stem", "extract": "structured-stem", "probabilities": "probabilities-stem"}[stage])
    options: dict = {}
    if sidecar and stage in SERVED_STAGES:
        args += ["--wait-for-endpoint", str(HEALTH_TIMEOUT_S)]
        options = _vllm_sidecar()
    if stage == "extract":
        options["synchronization"] = m.Synchronization(mutexes=[m.Mutex(name=EXTRACTION_MUTEX)])
    name = stage if sidecar or stage == "extract" else f"{stage}-on-endpoint"
    return _steps_container(name, stage, args, inputs=inputs, outputs=outputs, **options)


def _folder_artifacts(stages) -> list[S3Artifact]:
    """Whole stage folders of the run (every model's tables), optional: a stage may have produced nothing."""
    return [_artifact(STAGE_FOLDERS[s], STAGE_FOLDERS[s], optional=True) for s in stages if s in STAGE_FOLDERS]


def human_args() -> list[str]:
    """The human data files: validated by the plan step, read by the report step (the other steps do not use them)."""
    return [f"--human{n}={_wf(f'human{n}')}" for n in HUMAN_FORMATS]


def _study_step(stage: str) -> Container:
    """``stage`` (validate, merge) for one study over every model's tables, or a run stage (report)."""
    per_study = stage in STUDY_STAGE_DEPENDENCIES
    studies = _in("study") if per_study else _wf("studies")
    inputs_from = STUDY_STAGE_DEPENDENCIES[stage] if per_study else ("validate", "merge")
    if per_study:
        outputs = [_artifact(STAGE_FOLDERS[stage], STAGE_FOLDERS[stage])]
    else:
        outputs = [_artifact("report", REPORT_KEY), _artifact("comparison", COMPARISON_STEM.split("/")[0])]
    args = ["run", "--stages", stage, "--models", _in("models"), f"--endpoints={_wf('endpoints')}", "--studies", studies,
            "--run-id", _in("run-id"), *common_run_args(), *([] if per_study else human_args())]
    inputs = [Parameter(name="run-id"), Parameter(name="models"), *([Parameter(name="study")] if per_study else []),
              *_folder_artifacts(inputs_from)]
    return _steps_container(stage, stage, args, inputs=inputs, outputs=outputs)


def _plan_step() -> Container:
    outputs = [Parameter(name=name.removesuffix(".json"), value_from=m.ValueFrom(path=f"{PLAN_DIR}/{name}"))
               for name in ("run-id", "sidecar-items.json", "endpoint-items.json", "model-items.json", "study-items.json", "models")]
    args = ["cluster-plan", "--models", _wf("models"), f"--endpoints={_wf('endpoints')}", "--studies", _wf("studies"),
            f"--run-id={_wf('run-id')}", *common_run_args(), *human_args(), "--out", PLAN_DIR]
    return _steps_container("plan", "plan", args, work_volume=False, outputs=outputs)


def _task_names(stage: str) -> list[str]:
    return [stage, f"{stage}-on-endpoint"] if stage in SERVED_STAGES else [stage]


def _depends(stages) -> str:
    """Argo ``depends``: every task of ``stages`` finished; a failed non-blocking stage (validation) does not block."""
    terms = ["plan"]
    for stage in stages:
        for task in _task_names(stage):
            terms.append(f"({task}.Succeeded || {task}.Failed)" if stage in NON_BLOCKING_STAGES else task)
    return " && ".join(dict.fromkeys(terms))


def build_workflow_template(namespace: str | None = None) -> WorkflowTemplate:
    """The WorkflowTemplate (see the module docstring)."""
    plan_out = "{{tasks.plan.outputs.parameters.%s}}"
    with WorkflowTemplate(
        name=TEMPLATE_NAME, namespace=namespace, entrypoint="main",
        labels={"app.kubernetes.io/name": "grace-pipeline", "app.kubernetes.io/version": __version__},
        annotations={"workflows.argoproj.io/description": "Pragmatics studies on self-hosted LLMs: Experiment 1 answers, structured "
                     "extraction, Experiment 2 probabilities, validation and one analysis-ready table per study."},
        arguments=[Parameter(name=p.name, value=p.default, description=p.description, enum=list(p.enum) or None) for p in PARAMETERS],
        service_account_name=SERVICE_ACCOUNT,
        artifact_repository_ref=m.ArtifactRepositoryRef(config_map=ARTIFACT_REPOSITORY[0], key=ARTIFACT_REPOSITORY[1]),
        volumes=[m.Volume(name="work", empty_dir=m.EmptyDirVolumeSource()),
                 m.Volume(name="dshm", empty_dir=m.EmptyDirVolumeSource(medium="Memory")),
                 m.Volume(name="hf-cache", empty_dir=m.EmptyDirVolumeSource())],
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_completion=14 * 24 * 3600),
        security_context=m.PodSecurityContext(fs_group=STEPS_UID),  # the emptyDirs are writable by the steps' user
    ) as template:
        plan = _plan_step()
        model_steps = {(stage, sidecar): _model_step(stage, sidecar) for stage in STAGE_DEPENDENCIES
                       for sidecar in ((True, False) if stage in SERVED_STAGES else (True,))}
        study_steps = {stage: _study_step(stage) for stage in (*STUDY_STAGE_DEPENDENCIES, *RUN_STAGES)}
        with DAG(name="main", fail_fast=False):
            Task(name="plan", template=plan)
            for (stage, sidecar), container in model_steps.items():
                if stage not in SERVED_STAGES:
                    items = "model-items"  # the extractor serves every model x study
                else:
                    items = "sidecar-items" if sidecar else "endpoint-items"
                arguments = {"run-id": plan_out % "run-id", **{f.replace("_", "-"): f"{{{{item.{f}}}}}" for f in ITEM_FIELDS}}
                Task(name=container.name, template=container, arguments=arguments, with_param=plan_out % items,
                     depends=_depends(STAGE_DEPENDENCIES[stage]))
            for stage, container in study_steps.items():
                arguments = {"run-id": plan_out % "run-id", "models": plan_out % "models"}
                if stage in STUDY_STAGE_DEPENDENCIES:
                    Task(name=stage, template=container, arguments={**arguments, "study": "{{item.study}}"},
                         with_param=plan_out % "study-items", depends=_depends(STUDY_STAGE_DEPENDENCIES[stage]))
                else:
                    Task(name=stage, template=container, arguments=arguments,
                         depends=_depends((*STAGE_DEPENDENCIES, *STUDY_STAGE_DEPENDENCIES)))
    return template


def render_yaml(namespace: str | None = None) -> str:
    """The WorkflowTemplate as YAML (what ``grace-pipeline render`` writes and the chart ships)."""
    header = "# Generated by `grace-pipeline render` from pipeline/workflow.py; do not edit by hand.\n"
    return header + build_workflow_template(namespace).to_yaml()
