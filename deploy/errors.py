"""One hierarchy of expected failures. Each message says what failed and what to run next."""
from __future__ import annotations


class DeployError(Exception):
    """An expected failure: printed as a message, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  next: {self.hint}"
        return self.message


class ConfigError(DeployError):
    """The configuration file is missing, unreadable or invalid."""


class DatabaseError(DeployError):
    """A database could not be reached, created or queried."""


class MigrationError(DeployError):
    """The migration scripts are inconsistent, or running one failed."""


class WorkflowRefused(DeployError):
    """A step of the workflow was skipped, so the requested one is refused."""


class CheckFailed(DeployError):
    """One or more checks failed; the message lists every one."""


class BackupCheckFailed(DeployError):
    """The backup check found a problem; exits 1 (WARNING) or 2 (CRITICAL), as Nagios plugins do."""

    def __init__(self, message: str, status: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = status


class CommandFailed(DeployError):
    """A subprocess exited non-zero: names the command, its exit code and its last output."""

    def __init__(self, argv: list[str], returncode: int, output: str, *, hint: str | None = None):
        tail = "\n".join(output.strip().splitlines()[-15:])
        message = f"`{' '.join(argv)}` exited with {returncode}"
        if tail:
            message += ":\n" + "\n".join("    " + line for line in tail.splitlines())
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.output = output


class AppNotLoaded(DeployError):
    """`flask --app` could not load the project's app: nothing ran (a missing package, a wrong path)."""
