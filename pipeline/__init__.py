"""grace-pipeline: plan, runners and CLI around the step cores in ``steps``."""

__version__ = "0.1.0"
