"""The project's error hierarchy (shallow on purpose).

Every error a user can see derives from :class:`GraceError`, carries a message that
says what failed, where, and how to fix it, and an ``exit_code`` the CLI returns.
Third-party exceptions are converted at the boundary with ``raise ... from exc``.

Exit codes: 2 = bad input or usage (do not retry), 3 = a step failed more rows than
allowed (re-run to retry only the failed rows), 4 = a model server could not be
started or reached (transient: retry), 5 = validation found broken outputs,
6 = the artifact store could not be reached (transient: retry; finished rows are in
the checkpoint).
"""

from __future__ import annotations


class GraceError(Exception):
    """Base class of all errors grace-pipeline reports to a user."""

    exit_code = 1


class InputValidationError(GraceError):
    """A study file is unreadable or has invalid rows; nothing was sent to a model.

    ``problems`` lists one message per problem, each naming file, row and column.
    """

    exit_code = 2

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

    exit_code = 2


class ServerError(GraceError):
    """A model server could not be started, or does not answer as expected."""

    exit_code = 4


class StepFailedError(GraceError):
    """A step finished but more rows failed than ``max_failed_fraction`` allows.

    The finished rows are saved; re-running the same command retries only the
    failed ones.
    """

    exit_code = 3


class ValidationFailedError(GraceError):
    """An integrity check of the outputs failed; the report says which. Later stages still run
    (validation is one of ``pipeline.plan.NON_BLOCKING_STAGES``)."""

    exit_code = 5


class CheckpointMismatchError(GraceError):
    """A checkpoint exists but was written for different inputs or settings."""

    exit_code = 2


class StorageError(GraceError):
    """The artifact store did not answer after bounded retries (transient: re-run to resume)."""

    exit_code = 6


class StorageAccessError(GraceError):
    """The artifact store refused the credentials, the bucket does not exist, or the URL is invalid."""

    exit_code = 2
