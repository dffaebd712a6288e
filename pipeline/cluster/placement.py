"""Where a model's vLLM pod runs: its GPU class (GPU count, minimum GPU memory, node labels, /dev/shm).

Kubernetes resource quantities in a WorkflowTemplate must be literal quantities (Argo's full
CRD schemas reject ``{{inputs.parameters.gpus}}``, and older controllers fail the pod), so the
workflow has one fixed GPU template per class, generated from the registry; the ``plan`` step
routes each model to its class's task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from schemas.settings import ModelSpec

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, set by NVIDIA GPU feature discovery
DEFAULT_SHM = "8Gi"


@dataclass(frozen=True)
class GpuClass:
    """One fixed GPU template: every model with these needs shares it."""

    gpus: int
    min_gpu_memory_mib: int
    node_selector: tuple[tuple[str, str], ...]
    shm_size: str

    @property
    def name(self) -> str:
        """A short Argo name, e.g. 'gpu4-78g' (4 GPUs with more than 78,000 MiB each)."""
        name = f"gpu{self.gpus}" + (f"-{self.min_gpu_memory_mib // 1000}g" if self.min_gpu_memory_mib else "")
        if self.node_selector or self.shm_size != _default_shm(self.gpus):
            name += "-" + hashlib.sha256(json.dumps([self.node_selector, self.shm_size]).encode()).hexdigest()[:6]
        return name

    def affinity(self) -> dict:
        """Required node affinity on the GPU memory label (empty without a minimum)."""
        if not self.min_gpu_memory_mib:
            return {}
        term = {"matchExpressions": [{"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [str(self.min_gpu_memory_mib)]}]}
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _default_shm(gpus: int) -> str:
    """/dev/shm a class gets when no model asks for more (tensor parallelism shares tensors through it)."""
    return {1: DEFAULT_SHM, 2: "16Gi"}.get(gpus, "32Gi")


def _mib(size: str) -> int:
    return int(size[:-2]) * (1024 if size.endswith("Gi") else 1)


def gpu_class(model: ModelSpec) -> GpuClass:
    """The class of a vLLM model; /dev/shm is the larger of the model's and the GPU count's default."""
    shm = max(model.shm_size, _default_shm(model.gpus), key=_mib)
    return GpuClass(model.gpus, model.min_gpu_memory_mib, tuple(sorted(model.node_selector.items())), shm)


def gpu_classes(models) -> list[GpuClass]:
    """Distinct classes of the vLLM models in ``models`` (ModelSpec values), smallest first."""
    classes = {gpu_class(m) for m in models if m.engine == "vllm" and m.gpus > 0}
    return sorted(classes, key=lambda c: (c.gpus, c.min_gpu_memory_mib, c.node_selector, c.shm_size))
