"""What a push, pull or rollback did (or, with a dry run, would do)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fileconsul.errors import InvalidInput
from fileconsul.model.plan import Action
from fileconsul.model.records import Head


@dataclass
class Outcome:
    actions: list[Action] = field(default_factory=list)
    #: The revision the tree is at afterwards (for a push: the one it committed, if any).
    revision: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    #: (path, reason) of paths left alone because they are unsafe; the command exits 5.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: After a push: remote changes this node has still to pull.
    left_to_pull: int = 0
    #: The head a push committed (None: it committed nothing).
    committed: Head | None = None
    #: (path, change) for the --exec hook: what this pull applied, and what an interrupted one
    #: applied before it and no hook was handed.
    for_hooks: list[tuple[str, str]] = field(default_factory=list)
    #: The revision this node was at before.
    previous_revision: int = 0
    #: The index the head was read at (0: the tree has no head).
    head_index: int = 0
    #: Why the revision was not applied here (halted, rejected before), when it was not.
    held: str | None = None
    #: The prefix, and whether Consul holds nothing at all under it (no revision, no key).
    prefix: str = ""
    nothing_remote: bool = False
    #: On a signed tree read with trusted keys: the key that signed the head, and when.
    signer: str = ""
    signed_at: str = ""

    @property
    def exit_code(self) -> int:
        return InvalidInput.exit_code if self.skipped else 0
