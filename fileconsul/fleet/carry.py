"""Carrying revisions into a target datacenter, for `replicate`: each revision after the
target's, its record as stored and only the contents the target lacks, committed as any
commit (the head moved last, naming the source); the source's head tree taken whole; a
commit that stopped midway undone first; a halt carried with its revision; a source deleted
whole, mirrored when asked."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul.errors import ConflictError, FileconsulError
from fileconsul.fleet import rollout
from fileconsul.fleet.metrics import ReplicationMetrics
from fileconsul.fleet.watch import Stopper, Tell
from fileconsul.model.facts import FileInfo, same
from fileconsul.model.records import Commit, Head
from fileconsul.model.tree import KnownTree, RemoteTree, committed_tree
from fileconsul.store import commit as commits
from fileconsul.store import read, replica
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import blob_key, file_key
from fileconsul.store.lock import StandingLock
from fileconsul.store.prepare import Prepared


@dataclass
class Target:
    """One target datacenter, as the replicator knows it."""

    dc: str
    client: ConsulClient
    lock: StandingLock
    #: The committed tree there, as this replicator last committed or read it.
    known: KnownTree | None = None
    held: int = 0
    #: When the oldest source revision it lacks was committed (Unix time; None: none).
    behind_since: float | None = None
    behind_revision: int = 0
    said: str = ""
    backoff: float = 0.0
    retry_at: float = 0.0
    wake_at: float | None = None
    #: Why its next revision is to be the source's head taken whole.
    whole: str | None = None
    #: Why its tree is not the source's revision it claims (a commit would not follow).
    diverged: str | None = None
    #: The facts of the last commit this replicator made there (Commit.fields()).
    committed: dict[str, object] | None = None
    #: A revision whose contents were found incomplete at the last try.
    incomplete: int = 0
    #: After this pass, why it is short of the source's head (None: it is not).
    short: str | None = None


@dataclass
class Carrier:
    """What carrying needs: the prefix, the source, how long to wait for a push lock, when
    a stop may come, who hears of it and what counts it."""

    prefix: str
    source: ConsulClient
    source_dc: str
    lock_wait: float
    stopper: Stopper
    tell: Tell
    metrics: ReplicationMetrics
    mirror_wipe: bool = False
    #: What this pass read from the source already, for the next target: records by
    #: revision, contents by hash.
    seen: dict[int, tuple[Commit, bytes]] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict)

    def new_pass(self) -> None:
        self.seen.clear()
        self.contents.clear()

    def records(self, revisions: Sequence[int]) -> list[tuple[Commit, bytes]]:
        """The source's records of `revisions`, as stored (TxnFailed: one is not kept)."""
        missing = [r for r in revisions if r not in self.seen]
        for commit, record in read.read_records(self.source, self.prefix, missing):
            self.seen[commit.revision] = (commit, record)
        return [self.seen[r] for r in revisions]

    def target_tree(self, t: Target) -> RemoteTree:
        """The target's tree, once a commit that stopped midway there has been undone."""
        tree = read.read(t.client, self.prefix, known=t.known, lock_wait=self.lock_wait)
        journal = tree.dead_push
        if journal is None and tree.head is None and tree.files:
            # A first commit that stopped midway: readers take a tree without a head as it is.
            with suppress(FileconsulError, ValueError, StopIteration):
                journal = next(read.read_commits(t.client, self.prefix, [tree.next_revision]))
        if journal is not None:
            revision = journal.revision
            tree = commits.recover(t.client, tree, self.lock_wait)
            self.tell(
                "recovered",
                f"{t.dc}: undid the unfinished commit of revision {revision} (its writer "
                "stopped midway)",
                level="warning",
                target=t.dc,
                revision=revision,
            )
        return tree

    def follow(
        self,
        t: Target,
        tree: RemoteTree,
        head: Head,
        upto: int,
        halts: Mapping[int, tuple[str, rollout.Halt]],
    ) -> None:
        """Commit each revision after the target's, up to `upto`, one at a time."""
        try:
            records = self.records(range(tree.revision + 1, head.revision + 1))
        except (TxnFailed, ValueError):
            t.whole = f"the records after revision {tree.revision} are no longer kept"
            return
        later = [c for c, _ in records]
        base = committed_tree(tree.head, self.prefix, tree.committed)
        for i, (commit, record) in enumerate(records):
            if commit.revision > upto or not t.lock.keep():
                return
            if commit.revision in halts:
                self._carry_halt(t, commit.revision, *halts[commit.revision])
            base = self._commit_revision(t, base, head, commit, record, later[i + 1 :])
            self.gauge(t, head)

    def _commit_revision(
        self,
        t: Target,
        base: RemoteTree,
        head: Head,
        commit: Commit,
        record: bytes,
        later: Sequence[Commit],
    ) -> RemoteTree:
        moved = self._moved(t)
        wanted = replica.where_kept(self.prefix, commit, later, head.revision)
        try:
            sizes = replica.new_contents(commit)
            contents = replica.gather(self.source, t.client, base, wanted, sizes, self.contents)
        except replica.Incomplete:
            if t.incomplete == commit.revision and head.revision > commit.revision:
                t.whole = f"the contents of revision {commit.revision} are no longer all kept"
            t.incomplete = commit.revision
            raise
        limit = t.client.max_value_size()

        def prepare_on(tree: RemoteTree) -> Prepared:
            return replica.prepare_revision(
                t.client,
                tree,
                commit,
                record,
                contents,
                keep=head.keep,
                history=head.history,
                source_dc=self.source_dc,
                limit=limit,
            )

        try:
            prepared = prepare_on(base)
        except replica.Diverged as exc:
            t.diverged = str(exc)
            raise
        self.contents.update(contents)
        landed, after = self._commit(t, prepared, base.revision, prepare_on)
        t.incomplete = 0
        self.tell(
            "replicate",
            f"{t.dc}: committed revision {landed.revision} of {self.source_dc}: "
            f"{len(commit.changes)} changes; {moved.said(self.source_dc, t.dc)}",
            target=t.dc,
            revision=landed.revision,
            changes=len(commit.changes),
            **moved.facts(),
        )
        return committed_tree(landed, self.prefix, after)

    def take_whole(self, t: Target, tree: RemoteTree, head: Head, reason: str) -> None:
        """The source's head tree as one commit on whatever the target holds."""
        moved = self._moved(t)
        source_tree = read.read(self.source, self.prefix, others=False, head=head)
        if source_tree.revision != head.revision:
            return  # it moved: the next pass takes the newer head
        files = source_tree.committed
        # Records from the target's revision on are of no commit: of a take that stopped
        # midway, of a history whose head was lost, or (adopting) of a longer one of its own.
        if replica.drop_history_from(t.client, self.prefix, min(head.revision, tree.revision + 1)):
            tree = read.read(t.client, self.prefix, known=tree.known, lock_wait=self.lock_wait)
        held = tree.committed if tree.head is not None else tree.files
        base = committed_tree(tree.head, self.prefix, held)
        wanted, sizes = self._wanted_whole(files, held, head.revision)
        contents = replica.gather(self.source, t.client, base, wanted, sizes, self.contents)
        self.contents.update(contents)
        limit = t.client.max_value_size()

        def prepare_on(on: RemoteTree) -> Prepared:
            return replica.prepare_whole(
                t.client, on, head, files, contents, source_dc=self.source_dc, limit=limit
            )

        landed, _ = self._commit(t, prepare_on(base), base.revision, prepare_on)
        t.whole = t.diverged = None
        self.tell(
            "whole",
            f"{t.dc}: took revision {head.revision} of {self.source_dc} whole, as one "
            f"commit ({reason}): {len(sizes)} new contents in its {len(files)} files; "
            f"{moved.said(self.source_dc, t.dc)}",
            target=t.dc,
            revision=landed.revision,
            files=len(files),
            **moved.facts(),
        )
        self.metrics.count(t.dc, "whole")
        self.gauge(t, head)

    def _wanted_whole(
        self, files: Mapping[str, FileInfo], held: Mapping[str, FileInfo], revision: int
    ) -> tuple[dict[str, list[str]], dict[str, int]]:
        """Where the source keeps each content the target lacks at a path (hash -> keys)."""
        wanted: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for path, info in sorted(files.items()):
            if same(held.get(path), info):
                continue
            wanted.setdefault(info.hash, []).append(file_key(self.prefix, path))
            sizes[info.hash] = info.size
        for digest, keys in wanted.items():
            keys.append(blob_key(self.prefix, revision + 1, digest))
        return wanted, sizes

    def _commit(
        self,
        t: Target,
        prepared: Prepared,
        planned_at: int,
        prepare_on: Callable[[RemoteTree], Prepared],
    ) -> tuple[Head, dict[str, FileInfo]]:
        """Commit `prepared` in the target (the head moved last); under the lock, after an
        unfinished commit was undone, it is prepared again on the tree then, if that is still
        the tree it was planned on."""

        def replan(fresh: RemoteTree) -> Prepared:
            if fresh.revision != planned_at:
                raise ConflictError(
                    f"{t.dc} moved to revision {fresh.revision} meanwhile (another writer); "
                    "nothing of this commit was written"
                )
            return prepare_on(committed_tree(fresh.head, self.prefix, fresh.committed))

        with self.stopper.busy():
            done, landed = commits.commit(
                t.client,
                prepared,
                replan,
                lock_wait=self.lock_wait,
                label="replicating",
                into_replica=True,
            )
        t.held = landed.revision
        t.known = KnownTree(landed.revision, landed.index, landed.commit.digest, done.after)
        t.committed = landed.commit.fields()
        self.metrics.count(t.dc, "replicated")
        return landed, done.after

    def _carry_halt(self, t: Target, revision: int, dc: str, halt: rollout.Halt) -> None:
        """A halted revision goes on only with its halt, so that no watcher there that checks
        or halts applies it (a newer revision lifts it, as anywhere)."""
        rollout.halt(t.client, self.prefix, halt)
        self.tell(
            "halt",
            f"{t.dc}: revision {revision} is halted in {dc} ({halt.node}: {halt.reason}); it "
            f"goes on with its halt, so that no watcher in {t.dc} that checks or halts applies it",
            level="warning",
            target=t.dc,
            revision=revision,
        )

    def headless_source(self, t: Target) -> None:
        names, _ = self.source.keys(self.prefix + "/", separator="/")
        why = f"{self.source_dc} holds no revision of {self.prefix} " + (
            "(its files have no fileconsul history)" if names else "(deleted, or never pushed)"
        )
        t.short = why
        if self.mirror_wipe and not names:
            tree = read.read(t.client, self.prefix, lock_wait=self.lock_wait)
            if tree.head is not None or tree.files:
                with self.stopper.busy():
                    replica.wipe(t.client, tree, history=True)
                self._wiped(t, "its tree and history")
                t.known = None
                return
        self.say(t, "held", f"{t.dc}: {why}; nothing is written there", level="warning")

    def mirrored_wipe(self, t: Target, head: Head) -> bool:
        """With --mirror-wipe: when the source's files were deleted whole (its head left),
        delete the target's too; whether the source is wiped."""
        names, _ = self.source.keys(self.prefix + "/", separator="/")
        if names or not head.commit.files:
            return False
        tree = read.read(t.client, self.prefix, lock_wait=self.lock_wait)
        if tree.files:
            with self.stopper.busy():
                replica.wipe(t.client, tree, history=False)
            self._wiped(t, "its files")
        return True

    def _wiped(self, t: Target, what: str) -> None:
        self.tell(
            "wipe",
            f"{t.dc}: deleted {what}, as they were deleted in {self.source_dc} (--mirror-wipe)",
            level="warning",
            target=t.dc,
        )

    def say(self, t: Target, event: str, message: str, level: str = "info") -> None:
        """Tell `message` once, not on every pass while it stays true."""
        if message != t.said:
            t.said = message
            self.tell(event, message, level=level, target=t.dc)

    def _moved(self, t: Target) -> Moved:
        return Moved(self.source, t.client)

    def gauge(self, t: Target, head: Head) -> None:
        behind = t.behind_since if t.held < head.revision else None
        self.metrics.standing(t.dc, source=head.revision, held=t.held, behind_since=behind)


class Moved:
    """Bytes read from the source, read from the target and sent to it, from now on."""

    def __init__(self, source: ConsulClient, target: ConsulClient) -> None:
        self.source, self.target = source, target
        self.start = (source.bytes_received, target.bytes_received, target.bytes_sent)

    def facts(self) -> dict[str, int]:
        now = (self.source.bytes_received, self.target.bytes_received, self.target.bytes_sent)
        moved = [b - a for a, b in zip(self.start, now, strict=True)]
        return {"from_source": moved[0], "target_read": moved[1], "target_sent": moved[2]}

    def said(self, source_dc: str, target_dc: str) -> str:
        found = self.facts()
        return (
            f"{found['from_source']:,} bytes from {source_dc}, {found['target_read']:,} read "
            f"in {target_dc} and {found['target_sent']:,} sent to it"
        )
