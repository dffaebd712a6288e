"""The fixed names the cluster side shares: the WorkflowTemplate, the chart's objects (ServiceAccounts, ConfigMaps, the
weight-cache PVC) and the Secrets the operator creates. One home, read by the template (``workflow.py``), the plan step and
the preflight (which need no Hera), and matched by the Helm chart (``tests/test_chart.py`` checks it)."""

from __future__ import annotations

TEMPLATE_NAME = "grace-pipeline"
SERVICE_ACCOUNT = "grace-pipeline-workflow"  # every workflow pod
SUBMITTER_ACCOUNT = "grace-submitter"  # people submitting runs (chart value submitter.create)
ARTIFACT_REPOSITORY = ("grace-artifact-repository", "grace-s3")  # ConfigMap, key
STORE_CONFIGMAP = "grace-pipeline-store"
MODEL_CACHE_PVC = "grace-model-cache"  # ReadWriteMany PVC (the chart's modelCache): Hugging Face cache and vLLM compile cache
S3_SECRET = ("grace-s3-credentials", "accessKey", "secretKey")
HF_SECRET = ("grace-hf-token", "token")
EXTRACTOR_SECRET = ("grace-extractor", "api-key")
ENDPOINT_SECRET = ("grace-endpoint", "api-key")
