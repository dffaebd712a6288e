"""The project's error hierarchy (shallow on purpose).

Every error a user can see derives from :class:`GraceError`, carries a message that
says what failed, where, and how to fix it, and an ``exit_code`` the CLI returns.
Third-party exceptions are converted at the boundary with ``raise ... from exc``.

The exit codes are documented once, in :data:`EXIT_CODES` (the README's table and
``grace-pipeline --help`` are checked against it by tests/test_exit_codes.py); every error
class names its code there.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_ROWS_FAILED = 3
EXIT_SERVER = 4
EXIT_VALIDATION = 5
EXIT_STORAGE = 6
EXIT_RUN_LOCKED = 7
EXIT_WORKFLOW_FAILED = 8
EXIT_INTERRUPTED = 130

# code -> what it means and what to do; the single source of the README's exit-code table.
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "done",
    EXIT_UNEXPECTED: "unexpected internal error (a bug: the traceback says where; please report it)",
    EXIT_BAD_INPUT: "bad input, options, credentials or checkpoint settings, or a cluster the preflight refuses; nothing was sent "
                    "to a model: fix and re-run",
    EXIT_ROWS_FAILED: "a step failed more rows than `--max-failed-fraction` allows; finished rows are saved: "
                      "re-run to retry the failed ones",
    EXIT_SERVER: "a model server, the LLM extractor or the Argo server could not be started or reached: re-run when it answers",
    EXIT_VALIDATION: "validation found broken outputs (the analysis table is still written to look at)",
    EXIT_STORAGE: "the artifact store failed (full disk, no permission, S3 unreachable); no temporary file is left and finished rows "
                  "are in the checkpoint: free space or fix access, then re-run to resume",
    EXIT_RUN_LOCKED: "another run holds this run id and stage (the message says who and since when): wait for it, or use another "
                     "`--run-id`; a killed run's lock is taken over automatically",
    EXIT_WORKFLOW_FAILED: "`submit --wait` / `retry --wait`: the Argo workflow ended Failed or Error (`grace-pipeline status NAME` "
                          "shows which node; `grace-pipeline retry NAME` re-runs only the failed nodes)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); finished rows are saved: re-run to resume",
}


class GraceError(Exception):
    """Base class of all errors grace-pipeline reports to a user."""

    exit_code = EXIT_UNEXPECTED


class InputValidationError(GraceError):
    """A study file is unreadable or has invalid rows; nothing was sent to a model.

    ``problems`` lists one message per problem, each naming file, row and column.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, path: str, problems: list[str], max_shown: int = 25):
        self.path = path
        self.problems = list(problems)
        shown = self.problems[:max_shown]
        more = len(self.problems) - len(shown)
        lines = [f"{path}: {len(self.problems)} problem(s) in the input file; no model was called."]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        super().__init__("\n".join(lines))

    @classmethod
    def combine(cls, errors: list["InputValidationError"]) -> "InputValidationError":
        """One error reporting the problems of several files, file by file."""
        combined = cls.__new__(cls)
        GraceError.__init__(combined, "\n".join(str(e) for e in errors))
        combined.path = ", ".join(e.path for e in errors)
        combined.problems = [p for e in errors for p in e.problems]
        return combined


class ConfigError(GraceError):
    """A command-line option, registry entry or run configuration is invalid."""

    exit_code = EXIT_BAD_INPUT


class ServerError(GraceError):
    """A model server (or the LLM extractor) could not be started or reached, or does not answer as expected."""

    exit_code = EXIT_SERVER


class StepFailedError(GraceError):
    """A step finished but more rows failed than ``max_failed_fraction`` allows.

    The finished rows are saved; re-running the same command retries only the
    failed ones.
    """

    exit_code = EXIT_ROWS_FAILED


class ValidationFailedError(GraceError):
    """An integrity check of the outputs failed; the report says which. Later stages still run
    (validation is one of ``pipeline.plan.NON_BLOCKING_STAGES``)."""

    exit_code = EXIT_VALIDATION


class CheckpointMismatchError(GraceError):
    """A checkpoint exists but was written for different inputs or settings.

    Every checkpoint of a run is checked before any model server starts, so when this is
    raised nothing was sent.
    """

    exit_code = EXIT_BAD_INPUT


class StorageError(GraceError):
    """The artifact store failed: S3 did not answer after bounded retries, or a local write failed
    (full disk, no permission). Re-run to resume; no temporary file is left behind."""

    exit_code = EXIT_STORAGE


class StorageAccessError(GraceError):
    """The artifact store refused the credentials, the bucket does not exist, or the URL is invalid
    (found by the store check before any model is started)."""

    exit_code = EXIT_BAD_INPUT


class RunLockedError(GraceError):
    """Another process holds this run id's stage node (see :mod:`steps.run_lock`)."""

    exit_code = EXIT_RUN_LOCKED


class WorkflowFailedError(GraceError):
    """An Argo workflow followed with ``--wait`` ended Failed or Error."""

    exit_code = EXIT_WORKFLOW_FAILED
