"""One exception tree; each class carries the process exit code the CLI uses for it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHANGES = 1


def count(number: int, noun: str) -> str:
    """'1 file', '2 files': a number and its noun, for messages."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


class FileconsulError(Exception):
    """Base of every error fileconsul reports; the message is one sentence for the operator."""

    exit_code = 1


class UsageError(FileconsulError):
    exit_code = 2


class ConsulUnavailable(FileconsulError):
    """Consul could not be reached, timed out, has no leader or answered 5xx."""

    exit_code = 3


class ConflictError(FileconsulError):
    """Both sides changed, a check-and-set was lost, or a lock was held past the wait."""

    exit_code = 4


class InvalidInput(FileconsulError):
    """Too large, unreadable, an unsafe path or key, a refused plan, a manifest over capacity."""

    exit_code = 5


class PermissionDenied(FileconsulError):
    """Consul's ACLs refused the request (403)."""

    exit_code = 6


class IntegrityError(FileconsulError):
    """A value never matched its hash."""

    exit_code = 7


class CheckRejected(FileconsulError):
    """The --check command rejected the change; nothing of it was kept."""

    exit_code = 8

    def __init__(self, message: str, *, revision: int, exit: int, output: str) -> None:
        super().__init__(message)
        self.revision, self.exit, self.output = revision, exit, output


class Interrupted(FileconsulError):
    exit_code = 130


#: An unexpected exception: a bug in fileconsul (sysexits' EX_SOFTWARE).
EXIT_INTERNAL = 70
