"""Domain exceptions; each carries the exit code the CLI maps it to."""

from __future__ import annotations

# Exit codes, documented in `aishell --help` and the README.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WAITING_APPROVAL = 3
EXIT_DENIED = 4
EXIT_LOCKED = 5


class AishellError(Exception):
    """Base of every error a user can cause or act on; its message is one line."""

    exit_code = EXIT_FAILED


class ConfigError(AishellError):
    """The configuration file is missing, malformed or names something unknown."""

    exit_code = EXIT_USAGE


class UsageError(AishellError):
    """A command was given arguments that cannot work (unknown job type, bad run id)."""

    exit_code = EXIT_USAGE


class CatalogError(AishellError):
    """The tool catalog is invalid; aishell refuses to start with it."""

    exit_code = EXIT_USAGE


class ToolNotFound(AishellError):
    exit_code = EXIT_USAGE


class TargetError(AishellError):
    """The target cannot be reached or lacks something the job needs (a table, a column)."""

    exit_code = EXIT_USAGE


class TargetUnreachable(TargetError):
    """A connection to the target failed; counted by the circuit breaker."""

    exit_code = EXIT_FAILED


class BrokerUnreachable(AishellError):
    """The fleet's broker refused, failed or stopped answering while tasks were sent."""

    exit_code = EXIT_FAILED


class PlanError(AishellError):
    """A plan failed validation: unknown tool, bad params, a reference that points forward."""

    exit_code = EXIT_USAGE


class SubstitutionError(AishellError):
    """A ${step_N.output.key} reference cannot be resolved."""

    exit_code = EXIT_FAILED


class StepFailed(AishellError):
    """A tool raised while running a step; `details` carries what it found before failing."""

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class StepSkipped(AishellError):
    """The server did not do the step's work (not the owner, no privilege) or a check
    could not run: the step ends `skipped` with this reason, never `succeeded`.

    `details` carries what the tool did find, kept as the step's output."""

    def __init__(self, message: str, details: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class StepTimeout(StepFailed):
    """A step ran past its time limit and was interrupted."""


class StepInterrupted(StepFailed):
    """SIGINT or SIGTERM arrived while a step ran; it stops resumably."""


class NamedApprovalNeeded(AishellError):
    """A step stopped, resumably, at a limit only a person's yes for that very step may
    pass (a purge at its max_share): it waits for `aishell approve RUN --step N`.

    `reasons`: why, as the prompt and `aishell approve` show it; `details`: what the
    step did before it stopped, kept as its output."""

    exit_code = EXIT_WAITING_APPROVAL

    def __init__(
        self, message: str, reasons: list[str], details: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.details = details or {}


class TargetLocked(AishellError):
    """Another run holds the target's lock."""

    exit_code = EXIT_LOCKED


class TableHeld(AishellError):
    """A table planning had to read was held by another session past the lock wait."""


class PlanningStopped(AishellError):
    """The run's time limit came while it was planned (planning waited on the server, or
    an agent's own code was still planning): no run began."""

    exit_code = EXIT_DENIED


class RunNotFound(AishellError):
    exit_code = EXIT_USAGE


class StateError(AishellError):
    """The state store cannot be used (newer schema, unreadable file)."""

    exit_code = EXIT_USAGE


class StateTampered(StateError):
    """A row of the state store is not what this home's key signed (state/seals.py):
    changed outside aishell, or stored without a signature. Not a fault to wait out."""


class DeliveryRefused(AishellError):
    """A fleet task's delivery that begins no run: it came past its trigger's grace, or
    its target's task ended not started and was not sent again since."""


class PlannerUnavailable(AishellError):
    """The model server cannot be reached or cannot answer (no server, no such model)."""

    exit_code = EXIT_FAILED


class DraftRejected(PlanError):
    """Every plan the model drafted failed validation; the reasons say why."""

    def __init__(self, message: str, rejected: list[list[str]] | None = None) -> None:
        super().__init__(message)
        # Each rejected draft's reasons, in order.
        self.rejected = rejected or []


class PlanDeclined(AishellError):
    """A person looked at a drafted plan and chose not to run it."""

    exit_code = EXIT_DENIED


class StatementRefused(AishellError):
    """The guard refused a statement a step tried to send: not a read, and not one of
    the statement shapes the step was checked and approved with."""

    exit_code = EXIT_FAILED


# How the audit records a statement the guard refused: this, then the guard's reason.
REFUSED_BY_GUARD = "refused by the guard"


class SessionTampered(StatementRefused):
    """A step that only reads found its session changed after a statement (switched back
    to read-write, its search_path moved): code it ran did it."""
