"""One exception tree; each class carries the process exit code the CLI uses for it.

    FileconsulError                  1  (never raised itself)
    ├── UsageError                   2  a bad option, prefix, path or address
    ├── ConsulUnavailable            3  unreachable, timed out, no leader, 5xx
    ├── ConflictError                4  both sides changed; a lost check-and-set
    │   ├── LockHeld                 4  another push held the lock past --lock-wait
    │   └── TxnFailed (store)        4  Consul rolled a transaction back
    ├── InvalidInput                 5  too large, unreadable, unsafe, a refused plan
    │   ├── NewerFormat (model)      5  written by a newer fileconsul
    │   └── UnsafeLocalPath (local)  5  a link or a non-file in the way of a write
    ├── PermissionDenied             6  Consul's ACLs refused (403)
    ├── IntegrityError               7  a value, a record, a manifest or the head is corrupt
    │   └── Untrusted               11  not signed by a trusted key, or not what it signed
    ├── CheckRejected                8  the --check command rejected the change
    ├── HookFailed                   9  the --exec command failed (the change stands)
    ├── ReplicaRefused              10  a push or rollback into a replica of another datacenter
    └── Interrupted                130  Ctrl-C or SIGTERM

Anything else that escapes is a bug: the CLI reports it in one line with exit 70.
"""

from __future__ import annotations

#: `status` found something to move, `diff` a difference, `status --fleet` a node behind.
EXIT_CHANGES = 1
#: An unexpected exception: a bug in fileconsul (sysexits' EX_SOFTWARE).
EXIT_INTERNAL = 70


class FileconsulError(Exception):
    """Base of every error fileconsul reports; the message is one sentence for the operator."""

    exit_code = 1


class UsageError(FileconsulError):
    exit_code = 2


class ConsulUnavailable(FileconsulError):
    """Consul could not be reached, timed out, has no leader or answered 5xx."""

    exit_code = 3


class ConflictError(FileconsulError):
    """Both sides changed, or a check-and-set was lost."""

    exit_code = 4


class LockHeld(ConflictError):
    """Another push, or another fileconsul on this basepath, held the lock past the wait."""


class InvalidInput(FileconsulError):
    """Too large, unreadable, an unsafe path or key, a refused plan, a manifest over capacity."""

    exit_code = 5


class PermissionDenied(FileconsulError):
    """Consul's ACLs refused the request (403)."""

    exit_code = 6


class IntegrityError(FileconsulError):
    """A value never matched its hash, or what fileconsul keeps in Consul is corrupt."""

    exit_code = 7


class Untrusted(IntegrityError):
    """With trusted keys: the head is unsigned, signed by a key this node does not trust, or
    its signature does not verify; a revision at or below the one this node holds (a
    replay) or older than the maximum age; a record, manifest or value that is not what the
    signature covers; or anything else a node cannot verify (it cannot tell corruption from
    tampering)."""

    exit_code = 11


class CheckRejected(FileconsulError):
    """The --check command rejected the change; nothing of it was kept."""

    exit_code = 8

    def __init__(self, message: str, *, revision: int, exit: int, output: str) -> None:
        super().__init__(message)
        self.revision, self.exit, self.output = revision, exit, output


class HookFailed(FileconsulError):
    """The --exec command failed or timed out after the change was applied; the change
    stands."""

    exit_code = 9


class ReplicaRefused(FileconsulError):
    """The tree is a replica of another datacenter's: it is written by its replicator alone."""

    exit_code = 10


class Interrupted(FileconsulError):
    exit_code = 130
