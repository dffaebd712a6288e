"""The in-process runner of the plan's DAG: ``grace-pipeline run`` on one machine, and the stages of the cluster's
``serve`` step against its one server. It talks to model servers by URL only; a server it must start itself
(the embedded model) is started by a :class:`pipeline.runner.local.ServerStarter` that the CLI passes in."""
