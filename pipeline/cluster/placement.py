"""Where a model's vLLM pod runs: its GPU class (GPU count, minimum GPU memory and compute capability, node labels,
/dev/shm).

Kubernetes resource quantities in a WorkflowTemplate must be literal quantities (Argo's full
CRD schemas reject ``{{inputs.parameters.gpus}}``, and older controllers fail the pod), so the
workflow has one fixed GPU template per class, generated from the registry; the ``plan`` step
routes each model to the least demanding class of the template that satisfies it (:func:`place`), so a model
added with ``--registry`` (or a shipped model whose fields a registry overrides) runs in a class the template has.
The template tells the plan step its classes (``--gpu-classes``, :func:`classes_arg`).

How a class finds its nodes (:meth:`GpuClass.affinity`), so that it works on clusters as they are:

* with the registry's ``node_selector`` (a plain node selector, e.g. ``{gpu-pool: a100}``): those labels, nothing else
  (they name the hardware);
* otherwise a required node affinity with two alternatives, either of which a node may satisfy: NVIDIA GPU Feature
  Discovery's labels (GPU Operator: ``nvidia.com/gpu.memory`` > the class's MiB, ``nvidia.com/gpu.compute.major`` at least
  the class's), or GKE's ``cloud.google.com/gke-accelerator`` among the accelerators with that much memory and compute
  capability (:data:`GKE_ACCELERATORS`). Clusters with neither (plain device-plugin EKS/AKS, MIG mixed strategy) give
  their models a ``node_selector`` in the registry the template is rendered from.

bfloat16 needs compute capability 8.0 or newer (vLLM refuses it at load on T4 and V100, 7.x): a bfloat16 model's
class requires ``min_compute_major`` 8, so it never lands on such a GPU; a float16 or auto model's class does not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterable

from schemas.settings import ModelSpec
from steps.errors import ConfigError

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, set by NVIDIA GPU feature discovery
GPU_COMPUTE_MAJOR_LABEL = "nvidia.com/gpu.compute.major"  # CUDA compute capability, major; GFD too
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"  # set by GKE on GPU nodes (no GFD labels there by default)
# GKE accelerator label value -> (memory per GPU in MiB, as nvidia-smi and GFD report it; compute capability major)
GKE_ACCELERATORS = {
    "nvidia-tesla-k80": (11441, 3), "nvidia-tesla-p4": (7611, 6), "nvidia-tesla-p100": (16280, 6), "nvidia-tesla-v100": (16384, 7),
    "nvidia-tesla-t4": (15360, 7), "nvidia-l4": (23034, 8), "nvidia-tesla-a100": (40960, 8), "nvidia-a100-80gb": (81920, 8),
    "nvidia-h100-80gb": (81559, 9), "nvidia-h100-mega-80gb": (81559, 9), "nvidia-h200-141gb": (143771, 9), "nvidia-b200": (183359, 10),
}
BF16_MIN_COMPUTE_MAJOR = 8  # bfloat16 kernels need compute capability >= 8.0 (Ampere)
GPU_TOLERATIONS = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
DEFAULT_SHM = "8Gi"


@dataclass(frozen=True)
class GpuClass:
    """One fixed GPU template: every model with these needs shares it."""

    gpus: int
    min_gpu_memory_mib: int
    node_selector: tuple[tuple[str, str], ...]
    shm_size: str
    min_compute_major: int = BF16_MIN_COMPUTE_MAJOR

    @property
    def name(self) -> str:
        """A short Argo name, e.g. 'gpu4-78g' (4 GPUs with more than 78,000 MiB each; 'anycc': any compute capability)."""
        name = f"gpu{self.gpus}" + (f"-{self.min_gpu_memory_mib // 1000}g" if self.min_gpu_memory_mib else "")
        if self.min_compute_major != BF16_MIN_COMPUTE_MAJOR:
            name += f"-cc{self.min_compute_major}" if self.min_compute_major else "-anycc"
        if self.node_selector or self.shm_size != _default_shm(self.gpus):
            name += "-" + hashlib.sha256(json.dumps([self.node_selector, self.shm_size]).encode()).hexdigest()[:6]
        return name

    def gke_accelerators(self) -> list[str]:
        """The GKE accelerators with more than the class's memory and at least its compute capability."""
        return sorted(accelerator for accelerator, (mib, major) in GKE_ACCELERATORS.items()
                      if mib > self.min_gpu_memory_mib and major >= self.min_compute_major)

    def affinity(self) -> dict:
        """The required node affinity (see the module docstring); empty with a node selector or no requirement."""
        if self.node_selector:
            return {}
        gfd = ([{"key": GPU_MEMORY_LABEL, "operator": "Gt", "values": [str(self.min_gpu_memory_mib)]}] if self.min_gpu_memory_mib else [])
        if self.min_compute_major:
            gfd.append({"key": GPU_COMPUTE_MAJOR_LABEL, "operator": "Gt", "values": [str(self.min_compute_major - 1)]})
        if not gfd:
            return {}
        terms = [{"matchExpressions": gfd}]
        if self.gke_accelerators():
            terms.append({"matchExpressions": [{"key": GKE_ACCELERATOR_LABEL, "operator": "In", "values": self.gke_accelerators()}]})
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}

    def scheduling(self) -> dict:
        """The pod fields that place a pod of this class: nodeSelector, affinity, tolerations (as the template has them)."""
        return {"nodeSelector": dict(self.node_selector), "affinity": self.affinity(), "tolerations": [dict(t) for t in GPU_TOLERATIONS]}


def _default_shm(gpus: int) -> str:
    """/dev/shm a class gets when no model asks for more (tensor parallelism shares tensors through it)."""
    return {1: DEFAULT_SHM, 2: "16Gi"}.get(gpus, "32Gi")


def _mib(size: str) -> int:
    return int(size[:-2]) * (1024 if size.endswith("Gi") else 1)


def min_compute_major(model: ModelSpec) -> int:
    """The compute capability (major) the model's dtype needs: 8 for bfloat16, else none (0)."""
    return BF16_MIN_COMPUTE_MAJOR if model.dtype == "bfloat16" else 0


def gpu_class(model: ModelSpec) -> GpuClass:
    """The class of a vLLM model; /dev/shm is the larger of the model's and the GPU count's default."""
    shm = max(model.shm_size, _default_shm(model.gpus), key=_mib)
    return GpuClass(model.gpus, model.min_gpu_memory_mib, tuple(sorted(model.node_selector.items())), shm, min_compute_major(model))


def gpu_classes(models) -> list[GpuClass]:
    """Distinct classes of the vLLM models in ``models`` (ModelSpec values), smallest first."""
    classes = {gpu_class(m) for m in models if m.engine == "vllm" and m.gpus > 0}
    return sorted(classes, key=lambda c: (c.gpus, c.min_gpu_memory_mib, c.node_selector, c.shm_size, c.min_compute_major))


def _needs(gpu: GpuClass) -> str:
    need = f"{gpu.gpus} GPU(s)" + (f" with more than {gpu.min_gpu_memory_mib} MiB each" if gpu.min_gpu_memory_mib else "")
    if gpu.min_compute_major:
        need += f", compute capability {gpu.min_compute_major}.0 or newer"
    if gpu.node_selector:
        need += f", node labels {dict(gpu.node_selector)}"
    return need + f", /dev/shm {gpu.shm_size}"


def fits(gpu: GpuClass, model: ModelSpec) -> bool:
    """Whether ``model`` may run in class ``gpu``: the same GPU count, at least the model's GPU memory, every node label
    the model asks for, and at least its /dev/shm (a stricter class only keeps it off nodes it could have used)."""
    need = gpu_class(model)
    return (gpu.gpus == need.gpus and gpu.min_gpu_memory_mib >= need.min_gpu_memory_mib
            and set(need.node_selector) <= set(gpu.node_selector) and _mib(gpu.shm_size) >= _mib(need.shm_size)
            and gpu.min_compute_major >= need.min_compute_major)


def place(model: ModelSpec, classes: Iterable[GpuClass]) -> GpuClass:
    """The least demanding of the template's ``classes`` that fits ``model``; ConfigError (exit 2, before any GPU is
    requested) naming what the model needs and how to add such a class when none does."""
    fitting = [c for c in classes if fits(c, model)]
    if not fitting:
        have = ", ".join(f"{c.name} ({_needs(c)})" for c in classes) or "none"
        raise ConfigError(f"model {model.name!r} needs {_needs(gpu_class(model))}, a GPU class the installed WorkflowTemplate does "
                          f"not have (it has: {have}). Render the template from your registry and install it: "
                          "`grace-pipeline render --registry YOUR_MODELS.yaml --chart charts/grace-pipeline` then `helm upgrade`; "
                          "or change the model's gpus / min_gpu_memory_mib / node_selector / shm_size to fit a class above")
    return min(fitting, key=lambda c: (c.min_gpu_memory_mib, c.min_compute_major, len(c.node_selector), _mib(c.shm_size), c.name))


def classes_arg(classes: Iterable[GpuClass]) -> str:
    """The classes as one compact JSON argument (the plan step's ``--gpu-classes``)."""
    return json.dumps([{"gpus": c.gpus, "min_compute_major": c.min_compute_major, "min_gpu_memory_mib": c.min_gpu_memory_mib,
                        "node_selector": dict(c.node_selector), "shm_size": c.shm_size} for c in classes],
                      separators=(",", ":"), sort_keys=True)


def parse_classes(text: str) -> list[GpuClass]:
    """The classes of a ``--gpu-classes`` argument; ConfigError when it is not what :func:`classes_arg` writes."""
    try:
        return [GpuClass(int(c["gpus"]), int(c["min_gpu_memory_mib"]), tuple(sorted(c["node_selector"].items())), str(c["shm_size"]),
                         int(c.get("min_compute_major", BF16_MIN_COMPUTE_MAJOR))) for c in json.loads(text)]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"--gpu-classes must be the JSON list the WorkflowTemplate's plan step is rendered with, got {text[:200]!r}"
                          ) from exc
