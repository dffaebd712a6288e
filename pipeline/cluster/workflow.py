"""The Argo WorkflowTemplate of the SAME DAG the local runner executes, built with Hera.

Stages and dependencies come from :mod:`pipeline.plan`. The served stages (Experiment 1 and
Experiment 2, every study) of one model run in ONE pod against ONE vLLM start
(``grace-pipeline serve``; Experiment 2 first, then Experiment 1, as plan.py orders them), so
that model's extraction starts when its queries end, under a namespace-wide
mutex (one extraction job at a time: a shared API rate limit). So each model is a small DAG,
``serve -> extract``, fanned out from ``main`` over plain model names, one task per GPU class
(:mod:`pipeline.cluster.placement`: GPU count, GPU memory and /dev/shm are fixed per template, as
Kubernetes quantities must be), one for models on an existing endpoint or the embedded CPU
model, and ``extract-only`` for models whose served tables are already complete. Then
validate, merge (per study), fit (the papers' models, every study) and report. The ``plan``
step routes models and skips finished ones, so a re-submit loads nothing that is done.

Partial results: validate, merge, fit and report wait for every model task to END, however it ended
(``X.Succeeded || X.Skipped || X.Failed || X.Errored``: ``Errored`` is what an eviction or spent retries
give), and run on the models that finished; the report and ``run_summary.json`` name the ones that
did not, and why (:mod:`pipeline.runner.outcome`). A failed validation (exit 5, or Error) does not
block merge, fit and report either (nor does a failed fit block the report). The DAG's ``target`` is every
model task, validate, merge, fit and report:
Argo judges a DAG by its target tasks, so any failure still ends the workflow Failed (and
``grace-pipeline retry`` re-runs only what failed).

Clusters as they are: the plan step checks the cluster before any GPU pod (:mod:`pipeline.cluster.preflight`,
``preflight`` parameter); every GPU step has a deadline (``timeout``, from the plan step: the
``gpu-pending-minutes`` parameter plus a bound on its run from the cost model), which is Argo's one
bound on time spent Pending that every supported controller enforces (v3.6-v4.1: a node still Pending
past its template's ``timeout`` fails with the message ``timeout``; ``pendingTimeout`` exists only from
v4.1), and a timed-out step is not retried. Pods meet Pod Security ``restricted``: seccomp
RuntimeDefault, no privilege escalation, all capabilities dropped, non-root (the vLLM sidecar too,
with HOME in the pod's work folder and its caches on the weight-cache PVC), ``fsGroupChangePolicy:
OnRootMismatch`` so the large weight cache is not re-chowned at every start.

Every step is a Container template calling ``grace-pipeline`` in the steps image, with
the same arguments a local run takes. Step outputs are key-only S3 artifacts in the
workflow's artifact repository (``artifactRepositoryRef``: no endpoint or credential in
this YAML), not archived, at ``grace-runs/<run id>/<stage folder>/<file>`` - the layout of
a local run's store. Checkpoints go straight to the durable store
(``$GRACE_CHECKPOINT_STORE`` from the ``grace-pipeline-store`` ConfigMap), so a retried pod
resumes. Exit codes 4 (model server), 6 (storage) and 7 (run lock), a killed pod (137/143), a pod
whose main container never ran (exit code -1: a device-plugin admission error, an eviction) and Argo
errors are retried, waiting 1, 2, 4 minutes (no ``maxDuration``: in Argo it is a deadline
across all attempts counted from the first start, which would forbid retrying a long step);
bad input (2), too many failed rows (3) and broken outputs (5) are not. Secrets come only
from Kubernetes Secret references. Main containers' logs are archived to the artifact
repository (``archiveLogs``, at Argo's key ``<workflow>/<pod>/main.log``: not below the run; the plan
step records the workflow's name in the manifest); the vLLM sidecar's log is an output artifact of its
step, below the run.
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
from pipeline.cluster.cost import DEFAULT_PENDING_MINUTES
from pipeline.cluster.names import (
    ARTIFACT_REPOSITORY,
    ENDPOINT_SECRET,
    EXTRACTOR_SECRET,
    HF_SECRET,
    MODEL_CACHE_PVC,
    S3_SECRET,
    SERVICE_ACCOUNT,
    STORE_CONFIGMAP,
    TEMPLATE_NAME,
)
from pipeline.cluster.placement import GpuClass, classes_arg, gpu_classes
from pipeline.config import DEFAULT_ENDPOINT_CONCURRENCY, DEFAULT_EXTRACTOR_CONCURRENCY, DEFAULT_EXTRACTOR_MODEL
from pipeline.layout import COMPARISON_STEM, REPORT_KEY, STAGE_FOLDERS, SUMMARY_KEY
from pipeline.plan import RUN_STAGES, SERVED_STAGES, STUDY_STAGE_DEPENDENCIES
from pipeline.registry import load_registry
from schemas.fits import BootstrapMethod, FitSettings, SemanticsMode
from schemas.probabilities import ScoringMethod
from schemas.settings import DEFAULT_ALPHA, DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MAX_TOKENS, DEFAULT_SEED, DEFAULT_TEMPERATURE
from steps.errors import RunLockedError, ServerError, StorageError
from steps.extract import JSON_MODES
from steps.human import HUMAN_FORMATS
from steps.query import DEFAULT_MAX_FAILED_FRACTION
from steps.studies import available_studies

STEPS_IMAGE = f"ghcr.io/grace-pipeline/steps:{__version__}"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"  # pinned; see images/README.md before changing it
KEY_PREFIX = "grace-runs"  # artifact keys: grace-runs/<run id>/..., as a local --store s3://<bucket>/grace-runs
WORKDIR = "/grace/runs"  # the step's local store; artifacts are placed at the same relative paths
VLLM_DIR = "/grace/vllm"  # the serve step writes the sidecar's arguments here; the sidecar its log and exit code
VLLM_HOME = "/grace/vllm-home"  # the sidecar's HOME: writable by its non-root user, one per pod
PLAN_DIR = "/tmp/grace-plan"
MODEL_CACHE_MOUNT = "/models"
EXTRACTION_MUTEX = "grace-pipeline-extraction"
VLLM_PORT = 8000
TRANSIENT_EXIT_CODES = (ServerError.exit_code, StorageError.exit_code, RunLockedError.exit_code, 137, 143)
MODEL_TASKS_ON_ENDPOINT = ("endpoint", "extract-only")  # main-DAG model tasks besides one per GPU class
# The vLLM sidecar: waits for the serve step to write its arguments, tees its log next to them, records its exit code.
VLLM_WRAPPER = f"""set -u
d={VLLM_DIR}
mkdir -p "$HOME"
until [ -s "$d/args" ]; do sleep 1; done
eval "set -- $(cat "$d/args")"
python3 -m vllm.entrypoints.openai.api_server "$@" > >(tee -a "$d/vllm.log") 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
wait $pid
code=$?
echo $code > "$d/exit-code"
exit $code
"""


@dataclass(frozen=True)
class WorkflowParameter:
    """One parameter of the WorkflowTemplate: its name, default, description and allowed values (``enum``; empty: any)."""
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
                      "MODEL=URL;MODEL=URL (empty: one vLLM start per model on the cluster's GPUs). "
                      "API key from the grace-endpoint Secret"),
    WorkflowParameter("limit", "0", "Use only the first N rows of each study file (0: all rows)"),
    WorkflowParameter("replications", "1", "Samples per row, each with its own recorded seed"),
    WorkflowParameter("temperature", str(DEFAULT_TEMPERATURE), "Sampling temperature for Experiment 1"),
    WorkflowParameter("max-tokens", str(DEFAULT_MAX_TOKENS),
                      "Max generated tokens per answer (reasoning models use their registry value if larger)"),
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
    WorkflowParameter("extractor-concurrency", str(DEFAULT_EXTRACTOR_CONCURRENCY),
                      "Extractor requests in flight (one extraction job runs at a time)"),
    WorkflowParameter("alpha", str(DEFAULT_ALPHA), "Findings in the report: familywise error rate of each source's findings "
                      "(Holm's correction after Tarone's screen)"),
    WorkflowParameter("equivalence-margin", str(DEFAULT_EQUIVALENCE_MARGIN),
                      "Findings in the report: smallest difference that matters (0-1 scale of a bet or an utterance share); "
                      "a 'no longer greater' finding is reproduced when shown below it"),
    WorkflowParameter("study1-exclude", "", "Leave out Study 1 trials failing the researchers' checks in the report: prior, "
                      "knowledge or prior,knowledge (empty: none)"),
    WorkflowParameter("fit-semantics", "", "Literal-semantics norming judgements for the Study 2 polite-speaker fit as "
                      "s3://bucket/key (empty: Yoon et al. 2020's, in the image)"),
    WorkflowParameter("fit-semantics-mode", FitSettings().semantics_mode, "joint: the Study 2 fit infers the semantics with the "
                      "choices, constrained by the norming judgements (as the paper does); fixed: holds them at the norming data",
                      typing.get_args(SemanticsMode)),
    WorkflowParameter("fit-resamples", str(FitSettings().resamples), "Bootstrap resamples per source for the fits' intervals"),
    WorkflowParameter("fit-bootstrap", FitSettings().bootstrap, "Study 2 fit intervals: newton (k-step, fast) or refit (each "
                      "resample refitted to convergence)", typing.get_args(BootstrapMethod)),
    WorkflowParameter("fit-seed", str(FitSettings().seed), "Seed of the fits' starts and resamples"),
    WorkflowParameter("run-id", "", "Name of the run (empty: derived from inputs, prompts and sampling, so re-submitting resumes)"),
    WorkflowParameter("preflight", "true", "Check the cluster before any GPU pod: nodes for each GPU class, the weight-cache PVC "
                      "Bound, the workflow's permissions (false: GPU nodes that autoscale from zero)", ("true", "false")),
    WorkflowParameter("gpu-pending-minutes", str(DEFAULT_PENDING_MINUTES), "How long a GPU step may wait to be scheduled; its "
                      "deadline adds a bound on its run from the cost model, and a step past it fails (message 'timeout') unretried"),
    WorkflowParameter("steps-image", STEPS_IMAGE, "The grace-pipeline steps image"),
)


def _wf(name: str) -> str:
    return f"{{{{workflow.parameters.{name}}}}}"


def _in(name: str) -> str:
    return f"{{{{inputs.parameters.{name}}}}}"


def common_run_args() -> list[str]:
    """Options every ``grace-pipeline run`` step gets from the workflow's parameters (which studies and models: per step)."""
    args = [f"--study{n}={_wf(f'study{n}')}" for n in available_studies()]
    for option in ("registry", "limit", "replications", "temperature", "max-tokens", "seed", "scoring", "concurrency",
                   "max-failed-fraction", "extractor-url", "extractor-model", "extractor-json-mode", "extractor-concurrency",
                   "fit-semantics", "fit-semantics-mode", "fit-resamples", "fit-bootstrap", "fit-seed"):
        args.append(f"--{option}={_wf(option)}")
    return args + ["--store", WORKDIR]


STEPS_UID = 10001  # the steps image's user (images/steps.Dockerfile); the vLLM sidecar runs as it too (shared files in /grace)
# Pod Security "restricted": every container without privilege escalation, with all capabilities dropped, non-root; the pod
# with seccomp RuntimeDefault. Argo's own init/wait containers take theirs from the controller's executor.securityContext.
STEPS_SECURITY = m.SecurityContext(run_as_non_root=True, run_as_user=STEPS_UID, allow_privilege_escalation=False,
                                   capabilities=m.Capabilities(drop=["ALL"]))
VLLM_SECURITY = m.SecurityContext(run_as_non_root=True, run_as_user=STEPS_UID, run_as_group=STEPS_UID, allow_privilege_escalation=False,
                                  capabilities=m.Capabilities(drop=["ALL"]))
POD_SECURITY = m.PodSecurityContext(run_as_non_root=True, fs_group=STEPS_UID, fs_group_change_policy="OnRootMismatch",
                                    seccomp_profile=m.SeccompProfile(type="RuntimeDefault"))  # fsGroup: emptyDirs and the PVC writable
STEP_REQUESTS = {"plan": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
                 "serve-on-endpoint": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "4Gi"}}  # may run the embedded CPU model
DEFAULT_STEP_REQUESTS = {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "4Gi"}
WORK_SIZE_LIMIT = "4Gi"  # the work emptyDir: tables, the vLLM log; ephemeral-storage requests cover it


def _step_env(stage: str) -> list:
    """S3 credentials for every step; the extractor's key only for extract, the endpoints' key where models are served,
    the HF token only in plan (the gated-model check) and the vLLM sidecars."""
    access, secret = S3_SECRET[1:]
    env = [SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name=S3_SECRET[0], secret_key=access),
           SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name=S3_SECRET[0], secret_key=secret)]
    if stage == "extract":
        env.append(SecretEnv(name="DEEPSEEK_API_KEY", secret_name=EXTRACTOR_SECRET[0], secret_key=EXTRACTOR_SECRET[1], optional=True))
    if stage == "serve":
        env.append(SecretEnv(name="GRACE_ENDPOINT_API_KEY", secret_name=ENDPOINT_SECRET[0], secret_key=ENDPOINT_SECRET[1], optional=True))
    if stage == "plan":
        env.append(SecretEnv(name="HF_TOKEN", secret_name=HF_SECRET[0], secret_key=HF_SECRET[1], optional=True))
    return env + [Env(name="PYTHONUNBUFFERED", value="1")]


def _steps_container(name: str, stage: str, args: list[str], work_volume: bool = True, command: str = "run", **options) -> Container:
    """A template running ``grace-pipeline COMMAND ARGS`` in the steps image as its non-root user, retried when transient."""
    return Container(name=name, image=_wf("steps-image"), command=["grace-pipeline"], args=[command, *args], env=_step_env(stage),
                     env_from=[ConfigMapEnvFrom(name=STORE_CONFIGMAP)], security_context=STEPS_SECURITY, retry_strategy=_retry(),
                     resources=m.ResourceRequirements(requests=STEP_REQUESTS.get(name, DEFAULT_STEP_REQUESTS)),
                     volume_mounts=[m.VolumeMount(name="work", mount_path="/grace")] if work_volume else None, **options)


def retry_expression() -> str:
    """When Argo retries a step: an Argo error; a transient exit code; or exit code -1, which Argo reports when the main
    container never ran (a device-plugin admission error, an eviction) - except a step that timed out (its deadline
    passed, e.g. Pending: message 'timeout'), which would only wait as long again."""
    codes = ", ".join(str(c) for c in TRANSIENT_EXIT_CODES)
    return (f"lastRetry.status == 'Error' or (lastRetry.status == 'Failed' and (asInt(lastRetry.exitCode) in [{codes}] or "
            "(lastRetry.exitCode == '-1' and lastRetry.message != 'timeout')))")


def _retry() -> RetryStrategy:
    """3 retries after 1, 2 and 4 minutes. No maxDuration: Argo counts it from the FIRST attempt's start across all attempts
    (and kills a late attempt at that deadline), so any bound would forbid retrying a step that ran longer than it."""
    return RetryStrategy(limit="3", retry_policy="Always", expression=retry_expression(), backoff=m.Backoff(duration="1m", factor="2"))


def _artifact(name: str, relative: str, optional: bool = False) -> S3Artifact:
    """A key-only S3 artifact at ``relative`` (below the run) both in the pod and in the repository."""
    return S3Artifact(name=name, path=f"{WORKDIR}/{_in('run-id')}/{relative}", key=f"{KEY_PREFIX}/{_in('run-id')}/{relative}",
                      archive=NoneArchiveStrategy(), optional=optional or None)


def _folder_artifacts(stages, optional: bool = True) -> list[S3Artifact]:
    """Whole stage folders of the run (as inputs: every model's tables; as outputs: this step's)."""
    return [_artifact(STAGE_FOLDERS[s], STAGE_FOLDERS[s], optional=optional) for s in stages if s in STAGE_FOLDERS]


def _model_args(stages) -> list[str]:
    return ["--stages", ",".join(stages), "--models", _in("model"), "--studies", _wf("studies"), "--run-id", _in("run-id"),
            f"--endpoints={_wf('endpoints')}", *common_run_args()]


def _vllm_sidecar(gpu: GpuClass) -> UserContainer:
    """The vLLM server of a GPU class: fixed GPU count and memory; model, dtype, parallelism from the serve step's args file."""
    gpus = str(gpu.gpus)
    return UserContainer(
        name="vllm", image=VLLM_IMAGE, command=["bash", "-c", VLLM_WRAPPER],
        env=[SecretEnv(name="HF_TOKEN", secret_name=HF_SECRET[0], secret_key=HF_SECRET[1], optional=True),
             Env(name="HOME", value=VLLM_HOME),  # non-root: the image's HOME (/root) is not writable; per pod, in the work emptyDir
             Env(name="HF_HOME", value=f"{MODEL_CACHE_MOUNT}/huggingface"),  # weights: downloaded once per cluster
             Env(name="VLLM_CACHE_ROOT", value=f"{MODEL_CACHE_MOUNT}/vllm"),  # torch.compile cache
             Env(name="TRITON_CACHE_DIR", value=f"{MODEL_CACHE_MOUNT}/triton"),
             Env(name="XDG_CACHE_HOME", value=f"{MODEL_CACHE_MOUNT}/cache"),  # other ~/.cache users (kernel JIT caches)
             Env(name="VLLM_NO_USAGE_STATS", value="1")],  # no usage report written to HOME or sent out
        security_context=VLLM_SECURITY,
        resources=m.ResourceRequirements(
            requests={"cpu": str(4 * gpu.gpus), "memory": f"{24 * gpu.gpus}Gi", "ephemeral-storage": "10Gi", "nvidia.com/gpu": gpus},
            limits={"nvidia.com/gpu": gpus}),
        volume_mounts=[m.VolumeMount(name="dshm", mount_path="/dev/shm"), m.VolumeMount(name="work", mount_path="/grace"),
                       m.VolumeMount(name="model-cache", mount_path=MODEL_CACHE_MOUNT)],
    )


def _serve_step(gpu: GpuClass | None) -> Container:
    """Every served stage of one model (every study) against one server: a vLLM sidecar of ``gpu``, or (None) the model's
    endpoint / the embedded CPU model. Writes the model's Experiment 1 and 2 tables (and the vLLM log). A GPU step has a
    deadline (``timeout`` input, from the plan step), the bound on its time spent Pending."""
    inputs = [Parameter(name="run-id"), Parameter(name="model"), *([Parameter(name="timeout")] if gpu else [])]
    outputs = _folder_artifacts(SERVED_STAGES, optional=False)
    args = _model_args(SERVED_STAGES)
    if gpu is None:
        return _steps_container("serve-on-endpoint", "serve", args, command="serve", inputs=inputs, outputs=outputs)
    outputs.append(S3Artifact(name="vllm-log", path=f"{VLLM_DIR}/vllm.log",
                              key=f"{KEY_PREFIX}/{_in('run-id')}/logs/{_in('model')}/vllm.log",
                              archive=NoneArchiveStrategy(), optional=True))
    return _steps_container(
        f"serve-{gpu.name}", "serve", [*args, "--vllm-dir", VLLM_DIR, "--vllm-port", str(VLLM_PORT)], command="serve",
        inputs=inputs, outputs=outputs, sidecars=[_vllm_sidecar(gpu)], timeout=_in("timeout"),
        node_selector=dict(gpu.node_selector) or None, affinity=m.Affinity(**gpu.affinity()) if gpu.affinity() else None,
        tolerations=[m.Toleration(**t) for t in gpu.scheduling()["tolerations"]],
        volumes=[m.Volume(name="dshm", empty_dir=m.EmptyDirVolumeSource(medium="Memory", size_limit=gpu.shm_size)),
                 m.Volume(name="model-cache", persistent_volume_claim=m.PersistentVolumeClaimVolumeSource(claim_name=MODEL_CACHE_PVC))],
    )


def _extract_step() -> Container:
    """Structured extraction of one model (every study), one job at a time in the namespace (mutex)."""
    return _steps_container("extract", "extract", _model_args(("extract",)),
                            inputs=[Parameter(name="run-id"), Parameter(name="model"), *_folder_artifacts(("query",), optional=False)],
                            outputs=_folder_artifacts(("extract",), optional=False),
                            synchronization=m.Synchronization(mutexes=[m.Mutex(name=EXTRACTION_MUTEX)]))


def human_args() -> list[str]:
    """The human data files: validated by the plan step, read by the fit and report steps (the other steps do not use them)."""
    return [f"--human{n}={_wf(f'human{n}')}" for n in HUMAN_FORMATS]


def analysis_args() -> list[str]:
    """How the report step judges the papers' findings (the other steps do not use these)."""
    return [f"--{option}={_wf(option)}" for option in ("alpha", "equivalence-margin", "study1-exclude")]


# run stage -> the stage folders it reads (every study's)
RUN_STAGE_INPUTS = {"fit": ("merge",), "report": ("validate", "merge", "fit")}


def _study_step(stage: str) -> Container:
    """``stage`` (validate, merge) for one study over every model's tables, or a run stage (fit, report) over every study."""
    per_study = stage in STUDY_STAGE_DEPENDENCIES
    studies = _in("study") if per_study else _wf("studies")
    inputs_from = STUDY_STAGE_DEPENDENCIES[stage] if per_study else RUN_STAGE_INPUTS[stage]
    if per_study or stage in STAGE_FOLDERS:  # optional: with no model's tables (every model failed) nothing is written
        outputs = [_artifact(STAGE_FOLDERS[stage], STAGE_FOLDERS[stage], optional=True)]
    else:
        outputs = [_artifact("report", REPORT_KEY), _artifact("comparison", COMPARISON_STEM.split("/")[0]),
                   _artifact("summary", SUMMARY_KEY)]
    args = ["--stages", stage, "--models", _in("models"), f"--endpoints={_wf('endpoints')}", "--studies", studies,
            "--run-id", _in("run-id"), *common_run_args(), *([] if per_study else [*human_args(), *analysis_args()])]
    inputs = [Parameter(name="run-id"), Parameter(name="models"), *([Parameter(name="study")] if per_study else []),
              *_folder_artifacts(inputs_from)]
    return _steps_container(stage, stage, args, inputs=inputs, outputs=outputs)


def plan_outputs(classes: list[GpuClass]) -> list[str]:
    """The plan step's output parameters (files in PLAN_DIR, '.json' dropped): see pipeline.cluster.cluster_plan."""
    return ["run-id", *(f"{c.name}.json" for c in classes), *(f"{c.name}-timeout" for c in classes), "endpoint.json",
            "extract-only.json", "study-items.json", "models"]


def _plan_step(classes: list[GpuClass]) -> Container:
    outputs = [Parameter(name=name.removesuffix(".json"), value_from=m.ValueFrom(path=f"{PLAN_DIR}/{name}"))
               for name in plan_outputs(classes)]
    args = ["--models", _wf("models"), f"--endpoints={_wf('endpoints')}", "--studies", _wf("studies"),
            f"--run-id={_wf('run-id')}", *common_run_args(), *human_args(), "--out", PLAN_DIR,
            f"--gpu-classes={classes_arg(classes)}",  # the template's classes: the plan step places every model in one of them
            f"--preflight={_wf('preflight')}", f"--gpu-pending-minutes={_wf('gpu-pending-minutes')}",
            "--workflow={{workflow.name}}"]
    return _steps_container("plan", "plan", args, work_volume=False, command="cluster-plan", outputs=outputs)


def _model_dag(name: str, serve: Container, extract: Container, deadline: bool) -> DAG:
    """One model: serve (Experiment 1 + 2, one server start), then its extraction as soon as its queries are done.
    ``deadline``: the serve step is a GPU step with a ``timeout`` input."""
    inputs = [Parameter(name="run-id"), Parameter(name="model"), *([Parameter(name="timeout")] if deadline else [])]
    with DAG(name=name, inputs=inputs, fail_fast=False) as dag:
        arguments = {"run-id": _in("run-id"), "model": _in("model")}
        Task(name="serve", template=serve, arguments={**arguments, **({"timeout": _in("timeout")} if deadline else {})})
        Task(name="extract", template=extract, arguments=arguments, depends="serve")
    return dag


def ended(task: str) -> str:
    """A ``depends`` term true however ``task`` ended (Errored: an eviction, retries spent; Skipped: an empty fan-out)."""
    return f"({task}.Succeeded || {task}.Skipped || {task}.Failed || {task}.Errored)"


def build_workflow_template(namespace: str | None = None, registry: str | None = None) -> WorkflowTemplate:
    """The WorkflowTemplate (see the module docstring). Its GPU classes are those of the shipped registry with
    ``registry`` (a researcher's or operator's YAML) merged over it."""
    plan_out = "{{tasks.plan.outputs.parameters.%s}}"
    classes = gpu_classes(load_registry(registry).values())
    with WorkflowTemplate(
        name=TEMPLATE_NAME, namespace=namespace, entrypoint="main",
        labels={"app.kubernetes.io/name": "grace-pipeline", "app.kubernetes.io/version": __version__},
        annotations={"workflows.argoproj.io/description": "Pragmatics studies on self-hosted LLMs: Experiment 1 answers, structured "
                     "extraction, Experiment 2 probabilities, validation and one analysis-ready table per study."},
        arguments=[Parameter(name=p.name, value=p.default, description=p.description, enum=list(p.enum) or None) for p in PARAMETERS],
        service_account_name=SERVICE_ACCOUNT,
        artifact_repository_ref=m.ArtifactRepositoryRef(config_map=ARTIFACT_REPOSITORY[0], key=ARTIFACT_REPOSITORY[1]),
        archive_logs=True,  # main containers' logs survive podGC (the vLLM log is an artifact of its step)
        volumes=[m.Volume(name="work", empty_dir=m.EmptyDirVolumeSource(size_limit=WORK_SIZE_LIMIT))],
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        ttl_strategy=m.TTLStrategy(seconds_after_completion=14 * 24 * 3600),
        security_context=POD_SECURITY,
    ) as template:
        plan = _plan_step(classes)
        extract = _extract_step()
        model_dags = {c.name: _model_dag(f"model-{c.name}", _serve_step(c), extract, deadline=True) for c in classes}
        model_dags["endpoint"] = _model_dag("model-on-endpoint", _serve_step(None), extract, deadline=False)
        study_steps = {stage: _study_step(stage) for stage in (*STUDY_STAGE_DEPENDENCIES, *RUN_STAGES)}
        model_tasks = [*model_dags, "extract-only"]
        with DAG(name="main", fail_fast=False, target=" ".join((*model_tasks, *study_steps))):
            Task(name="plan", template=plan)
            for name, dag in model_dags.items():
                deadline = {"timeout": plan_out % f"{name}-timeout"} if name != "endpoint" else {}
                Task(name=name, template=dag, arguments={"run-id": plan_out % "run-id", "model": "{{item}}", **deadline},
                     with_param=plan_out % name, depends="plan")
            Task(name="extract-only", template=extract, arguments={"run-id": plan_out % "run-id", "model": "{{item}}"},
                 with_param=plan_out % "extract-only", depends="plan")
            for stage, container in study_steps.items():
                arguments = {"run-id": plan_out % "run-id", "models": plan_out % "models"}
                after = STUDY_STAGE_DEPENDENCIES.get(stage) or (*STUDY_STAGE_DEPENDENCIES, *RUN_STAGES[:RUN_STAGES.index(stage)])
                # partial results: every model task and earlier study stage has ENDED, however (pipeline.plan.PARTIAL_STAGES)
                depends = " && ".join(["plan", *(ended(t) for t in model_tasks), *(ended(s) for s in after if s in study_steps)])
                if stage in STUDY_STAGE_DEPENDENCIES:
                    Task(name=stage, template=container, arguments={**arguments, "study": "{{item}}"},
                         with_param=plan_out % "study-items", depends=depends)
                else:
                    Task(name=stage, template=container, arguments=arguments, depends=depends)
    return template


def render_yaml(namespace: str | None = None, registry: str | None = None) -> str:
    """The WorkflowTemplate as YAML (what ``grace-pipeline render`` writes and the chart ships); ``registry``: see
    :func:`build_workflow_template`."""
    header = "# Generated by `grace-pipeline render` from pipeline/cluster/workflow.py; do not edit by hand.\n"
    if registry:
        header += f"# GPU classes from pipeline/models.yaml + {registry}\n"
    return header + build_workflow_template(namespace, registry).to_yaml()
