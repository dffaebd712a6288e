#!/usr/bin/env bash
# Build (and optionally push) the images the cluster workflow runs, tagged as the workflow expects.
#   images/build.sh            build the steps image  ghcr.io/grace-pipeline/steps:<package version>
#   images/build.sh --push     ... and push it (log in to the registry first)
#   REGISTRY=registry.example.org/lab images/build.sh --push   use your own registry; then submit with
#                              -p steps-image=registry.example.org/lab/steps:<version>
# The vLLM image is not built here: the workflow pins vllm/vllm-openai (see images/README.md);
# mirror it into your registry if the cluster cannot pull from Docker Hub.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
registry=${REGISTRY:-ghcr.io/grace-pipeline}
image="${registry}/steps:${version}"

docker build -f images/steps.Dockerfile -t "${image}" .
echo "built ${image}"
if [[ "${1:-}" == "--push" ]]; then
  docker push "${image}"
  echo "pushed ${image}"
fi
vllm=$(python3 -c 'from pipeline.cluster.workflow import VLLM_IMAGE; print(VLLM_IMAGE)' 2>/dev/null || true)
echo "vLLM image used by the workflow: ${vllm:-see pipeline/cluster/workflow.py VLLM_IMAGE}"
