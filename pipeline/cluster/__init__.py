"""The Argo Workflows path: the WorkflowTemplate (Hera), the cluster plan step, GPU placement and cost, the vLLM
serve step, and submit/status/retry against the Argo API. Uses the shared core (``pipeline.*``), the runner and
``steps``; never the embedded model server (the CLI hands the serve step a way to start it)."""
