"""Executes plans: status, push and pull. The one module that talks to Consul and touches files."""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Generic, NamedTuple, TypeVar

from fileconsul import remote, state, tree
from fileconsul.config import Settings
from fileconsul.consul import (
    TXN_MAX_BODY,
    TXN_MAX_OPS,
    ConsulClient,
    KVEntry,
    Op,
    TxnFailed,
    encode_txn,
    kv_cas,
    kv_check_index,
    kv_check_not_exists,
    kv_delete,
    kv_delete_cas,
    kv_get,
    kv_set,
)
from fileconsul.errors import (
    ConflictError,
    FileconsulError,
    IntegrityError,
    InvalidInput,
)
from fileconsul.manifest import FileInfo, content_hash, encode, hash_to_flags
from fileconsul.plan import Action, Plan, check_deletes, plan
from fileconsul.remote import RemoteTree, lock_key, manifest_key

#: Seconds of a push session's TTL: Consul ends the session of a pusher that died (and so
#: frees the lock) within twice this, its grace period included.
LOCK_TTL = 15
#: Bytes of values read per transaction during a pull.
FETCH_BATCH_BYTES = 4 * 1024 * 1024
#: Bytes of file contents a push keeps from its scan instead of reading the files again.
KEEP_BYTES = 64 * 1024 * 1024
#: A value whose operation takes more than this goes alone (a PUT), not in a transaction.
_LARGE = TXN_MAX_BODY // 2
#: Files a push sends in one transaction with no lock: the other two operations check the
#: lock and write the manifest.
SINGLE_TXN_FILES = TXN_MAX_OPS - 2
#: Transactions a push or pull keeps in flight at once.
IN_FLIGHT = 4
#: Makes a progress display for (label, total); yields the function that advances it.
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]


_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass
class Run:
    """What one command works with: its settings, its Consul client and its limits."""

    settings: Settings
    client: ConsulClient
    lock_wait: float = 30.0
    stale: bool = False
    progress: Progress | None = None

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    _advance: Callable[[int], None] | None = None

    def tick(self, count: int = 1) -> None:
        if self._advance is not None:
            self._advance(count)

    @contextmanager
    def bar(self, label: str, total: int) -> Iterator[None]:
        """Show progress (when the caller asked for it) while `total` items are handled."""
        if self.progress is None:
            yield
            return
        with self.progress(label, total) as advance:
            self._advance = advance
            try:
                yield
            finally:
                self._advance = None


@dataclass
class Status:
    prefix: str
    plan: Plan
    remote: RemoteTree
    scan: tree.Scan
    record: state.Record

    @property
    def in_sync(self) -> bool:
        return self.plan.in_sync

    @property
    def warnings(self) -> list[str]:
        unsafe = [f"skipped unsafe key {key!r}: {why}" for key, why in self.remote.unsafe]
        return _warnings(self.scan, self.remote) + unsafe


@dataclass
class Outcome:
    """What a push or pull did (or, with dry_run, would do)."""

    actions: list[Action] = field(default_factory=list)
    revision: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    #: (path, reason) of paths left alone because they are unsafe; the command exits 5.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: After a push: remote changes still to pull (the tree is not all at `revision`).
    pending: int = 0

    @property
    def exit_code(self) -> int:
        return InvalidInput.exit_code if self.skipped else 0


def _warnings(scan: tree.Scan, tree_: RemoteTree) -> list[str]:
    notes = [f"skipped {path}: {why}" for path, why in scan.skipped]
    notes += tree_.warnings
    notes += [f"{path}: {why}" for path, why in tree_.corrupt]
    if tree_.uncommitted:
        notes.append(
            f"{len(tree_.uncommitted)} values of an interrupted push are ignored until a push "
            "commits (re-run that push)"
        )
    return notes


def status(run: Run) -> Status:
    root = run.settings.basepath
    record = state.load(root, run.prefix)
    scan, tree_ = _scan_and_read(run, record)
    if record.exists and scan.hash_cache != record.hash_cache:
        # Like `git status` refreshing its index: only the hash cache moves, never the base.
        with suppress(ConflictError), state.local_lock(root, wait=0):
            record.hash_cache = scan.hash_cache
            state.save_cache(root, record)
    p = plan(scan.files, record.files, tree_.files)
    return Status(run.prefix, p, tree_, scan, record)


def _scan_and_read(
    run: Run, record: state.Record, *, push: bool = False, first: _FirstPush | None = None
) -> tuple[tree.Scan, RemoteTree]:
    """The local scan and the remote read, side by side: one mostly waits on the disk, the
    other on Consul. A scan error comes first, as if the two ran one after the other.

    A push keeps the bytes the scan reads, reads the leader's view (never --stale), and asks
    the agent's value limit now, so that it is cached when the push needs it; a first push
    hands each file to `first` as it is scanned."""
    stale = run.stale and not push

    def read() -> RemoteTree:
        remote_tree = remote.read(run.client, run.prefix, lock_wait=run.lock_wait, stale=stale)
        if push:
            run.client.max_value_size()
        return remote_tree

    keep_bytes = KEEP_BYTES if push else 0
    root = run.settings.basepath
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fileconsul-read") as pool:
        future = pool.submit(read)
        if first is None:
            scan = tree.scan(root, record.hash_cache, keep_bytes=keep_bytes)
        else:
            first.remote = future
            scan = tree.scan(root, record.hash_cache, sink=first.add)
            scan.contents = first.scanned()
        return scan, future.result()


def _refuse_conflicts(p: Plan, command: str, force: bool) -> None:
    if p.conflicts and not force:
        paths = ", ".join(c.path for c in p.conflicts[:5])
        more = f" and {len(p.conflicts) - 5} more" if len(p.conflicts) > 5 else ""
        winner = "local" if command == "push" else "remote"
        raise ConflictError(
            f"{command} refused: {paths}{more} changed on both sides; nothing was changed "
            f"(resolve it, or run {command} --force to keep the {winner} version)"
        )


def _advance(record: state.Record, p: Plan, applied: Sequence[Action], revision: int) -> None:
    """Move the record to what is now the same on both sides."""
    for path, info in [*p.converged.items(), *((a.path, a.target) for a in applied)]:
        if info is None:
            record.files.pop(path, None)
        else:
            record.files[path] = info
    record.revision = revision


# -- push -------------------------------------------------------------------------------------


def push(
    run: Run, *, force: bool = False, dry_run: bool = False, max_delete: int | None = None
) -> Outcome:
    root = run.settings.basepath
    with state.local_lock(root), ExitStack() as stack:
        record = state.load(root, run.prefix)
        first = None if dry_run or record.files else stack.enter_context(_FirstPush(run))
        scan, tree_ = _scan_and_read(run, record, push=True, first=first)
        if scan.unsafe:
            path, why = scan.unsafe[0]
            raise InvalidInput(
                f"push refused: {path!r} cannot be a Consul key ({why}); nothing was pushed "
                f"(rename it or add it to {tree.IGNORE_FILE})"
            )
        p, actions = _plan_push(scan, record, tree_, force, max_delete)
        if dry_run:
            return Outcome(actions, tree_.committed_index, True, _warnings(scan, tree_))
        revision = tree_.committed_index
        if _needs_write(tree_, actions):
            limit = run.client.max_value_size()
            for action in actions:
                if action.target is not None and action.target.size > limit:
                    raise InvalidInput(
                        f"{action.path} is {action.target.size} bytes, over Consul's {limit}-byte "
                        f"value limit; nothing was pushed (add it to {tree.IGNORE_FILE} or "
                        "shrink it)"
                    )
            prepared = _prepare(run, tree_, actions, limit, scan.contents)
            if first is not None and first.lease is not None:
                with run.bar("pushing", len(prepared.writes)):
                    run.tick(len(first.sent))  # sent while the tree was scanned
                    revision = first.finish(prepared)
            elif prepared.single and (committed := _write_unlocked(run, prepared)) is not None:
                revision = committed
            else:
                with push_lock(run) as lease:
                    # Planned again under the lock if another push committed meanwhile.
                    if not remote.unchanged_since(run.client, tree_):
                        fresh = remote.read(
                            run.client, run.prefix, lock_wait=run.lock_wait, session=lease.session
                        )
                        if not fresh.plans_like(tree_):
                            p, actions = _plan_push(scan, record, fresh, force, max_delete)
                            prepared = _prepare(run, fresh, actions, limit, scan.contents)
                        tree_ = fresh
                    revision = tree_.committed_index
                    if _needs_write(tree_, actions):
                        with run.bar("pushing", len(prepared.writes)):
                            revision = _write(run, lease, prepared)
        _advance(record, p, actions, revision)
        record.hash_cache = scan.hash_cache
        state.save(root, record)
        outcome = Outcome(actions, revision, False, _warnings(scan, tree_))
        outcome.pending = len(p.pull) + (0 if force else len(p.conflicts))
        return outcome


def _needs_write(tree_: RemoteTree, actions: Sequence[Action]) -> bool:
    """Changes to send, or a tree written by another tool to adopt."""
    return bool(actions or tree_.adopt or (tree_.committed_index == 0 and tree_.files))


def _plan_push(
    scan: tree.Scan,
    record: state.Record,
    tree_: RemoteTree,
    force: bool,
    max_delete: int | None,
) -> tuple[Plan, list[Action]]:
    p = plan(scan.files, record.files, tree_.files)
    _refuse_conflicts(p, "push", force)
    actions = p.pushes(force=force)
    check_deletes(actions, len(tree_.files), max_delete=max_delete, force=force, side="in Consul")
    return p, actions


@dataclass
class _Lease:
    run: Run
    session: str
    renewed: float = field(default_factory=time.monotonic)

    def keep(self) -> None:
        if time.monotonic() - self.renewed > LOCK_TTL / 3:
            self.run.client.session_renew(self.session)
            self.renewed = time.monotonic()


@contextmanager
def push_lock(run: Run) -> Iterator[_Lease]:
    """Hold `<prefix>.lock` with a session, so pushes never interleave and pulls wait."""
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    with run.client.session(f"fileconsul push {run.prefix}", ttl=LOCK_TTL) as session:
        deadline = time.monotonic() + run.lock_wait
        while not run.client.put(lock_key(run.prefix), holder.encode(), acquire=session):
            remote.wait_for_lock(run.client, run.prefix, deadline)
        yield _Lease(run, session)


class _Write(NamedTuple):
    path: str
    target: FileInfo | None
    value: bytes | None  # known already (an adopted value); else read from disk
    #: Bytes of JSON its operation takes in a transaction, about.
    cost: int

    @classmethod
    def of(cls, prefix: str, path: str, target: FileInfo | None, value: bytes | None) -> _Write:
        size = target.size if target else 0
        return cls(path, target, value, 4 * (size // 3 + 1) + 2 * _json_len(prefix + path) + 128)


def _json_len(text: str) -> int:
    """At most how long `text` is as a JSON string (a non-ASCII character can take 12 bytes)."""
    return len(text) + 3 if text.isascii() else 12 * len(text) + 3


@dataclass
class _Prepared:
    """A push's writes, packed into transactions, and the manifest that commits them."""

    tree: RemoteTree
    writes: list[_Write]
    manifest: bytes
    batches: list[list[_Write]]
    large: list[_Write]
    limit: int

    @property
    def single(self) -> bool:
        """Everything fits one transaction beside the manifest and a lock check."""
        if self.large or len(self.batches) > 1:
            return False
        batch = self.batches[0] if self.batches else []
        body = sum(w.cost for w in batch) + 4 * len(self.manifest) // 3
        return len(batch) <= SINGLE_TXN_FILES and body + 1024 < TXN_MAX_BODY


def _prepare(
    run: Run,
    tree_: RemoteTree,
    actions: Sequence[Action],
    limit: int,
    contents: Mapping[str, bytes],
) -> _Prepared:
    changed = {a.path for a in actions}
    prefix = run.prefix
    writes = [_Write.of(prefix, a.path, a.target, contents.get(a.path)) for a in actions] + [
        _Write.of(prefix, path, tree_.files[path], tree_.values[path])
        for path in sorted(tree_.adopt - changed)
        if path in tree_.values
    ]
    files = dict(tree_.files)
    for action in actions:
        if action.target is None:
            files.pop(action.path, None)
        else:
            files[action.path] = action.target
    batches, large = _pack(writes)
    return _Prepared(tree_, writes, encode(files, max_size=limit), batches, large, limit)


def _pack(writes: Sequence[_Write]) -> tuple[list[list[_Write]], list[_Write]]:
    """Writes packed into transactions, and those too large to share one (sent alone)."""
    large = [w for w in writes if w.cost > _LARGE]
    # One operation of each transaction is kept for the manifest or its check.
    batches = _batches(
        [w for w in writes if w.cost <= _LARGE],
        lambda w: w.cost,
        count=TXN_MAX_OPS - 1,
        total=TXN_MAX_BODY - 1024,
    )
    return batches, large


def _single_txn(run: Run, prepared: _Prepared, guard: list[Op]) -> int:
    """Files and manifest in one transaction, all or nothing."""
    batch = prepared.batches[0] if prepared.batches else []
    ops = [_op(run, w, prepared.limit) for w in batch]
    manifest = _manifest_op(run, prepared.manifest, prepared.tree.manifest_index)
    index = _commit(run, [*guard, *ops, manifest])
    run.tick(len(ops))
    return index


def _write_unlocked(run: Run, prepared: _Prepared) -> int | None:
    """The common small push: one transaction that also checks no push holds the lock, so it
    needs no session. None when it was refused (lock held, or the manifest moved)."""
    try:
        return _single_txn(run, prepared, [kv_check_not_exists(lock_key(run.prefix))])
    except ConflictError as exc:
        if isinstance(exc.__cause__, TxnFailed):
            return None
        raise


def _write(run: Run, lease: _Lease, prepared: _Prepared) -> int:
    """Write under the lock and commit the manifest; returns the new manifest's ModifyIndex."""
    if prepared.single:
        return _single_txn(run, prepared, [])
    tree_ = prepared.tree
    index = tree_.manifest_index
    if tree_.committed_index == 0:
        index = _commit_first(run, tree_.files, index, prepared.limit)
    return _send_and_commit(run, lease, prepared, index)


def _commit_first(run: Run, files: Mapping[str, FileInfo], index: int, limit: int) -> int:
    """Commit the tree as it stands before writing under the lock, so that every batch
    written counts as uncommitted to readers until the final manifest lands."""
    return _commit_manifest(run, encode(files, max_size=limit), index)


def _send_and_commit(run: Run, lease: _Lease, prepared: _Prepared, index: int) -> int:
    """Send the prepared batches and large values, each checking the manifest is still at
    `index`, then commit the manifest in its place."""
    limit = prepared.limit
    check = kv_check_index(manifest_key(run.prefix), index)

    def send(batch: list[_Write]) -> int:
        return _send_batch(run, check, batch, limit)

    # Batches touch disjoint keys and each checks the manifest, so their order is free; several
    # in flight let Consul apply one while the next is encoded and sent.
    batches = prepared.batches
    with closing(in_flight(send, batches, depth=IN_FLIGHT, name="fileconsul-push")) as done:
        for sent in done:
            lease.keep()
            run.tick(sent)
    for write in prepared.large:
        lease.keep()
        assert write.target is not None
        data = _content(run, write, limit)
        run.client.put(f"{run.prefix}/{write.path}", data, flags=hash_to_flags(write.target.hash))
        run.tick()
    lease.keep()
    return _commit_manifest(run, prepared.manifest, index)


def _send_batch(run: Run, check: Op, batch: Sequence[_Write], limit: int) -> int:
    _commit(run, encode_txn([check, *(_op(run, w, limit) for w in batch)]))
    return len(batch)


def _is_empty(tree_: RemoteTree) -> bool:
    """No key at all under the prefix: no manifest, no file, nothing unsafe or half-pushed."""
    return not (
        tree_.manifest_index or tree_.files or tree_.unsafe or tree_.uncommitted or tree_.corrupt
    )


class _FirstPush:
    """The first push into an empty prefix, sent while the scan is still reading the tree.

    The scan hands over each file as soon as it is hashed. The first ones are only held: a
    push of up to SINGLE_TXN_FILES files stays one transaction without a lock. Past them, when
    the prefix holds no key at all, this takes the lock, commits the empty tree (so that every
    batch counts as uncommitted until the manifest lands) and sends full transactions, several
    in flight, while the scan goes on. The push then plans as usual, and `finish` sends the
    rest and commits. A push that ends without committing (refused, failed, interrupted)
    deletes every key it sent and the empty manifest: the prefix is left empty, as it was.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.remote: Future[RemoteTree] | None = None
        #: Bytes of the files not sent during the scan, for the planned push.
        self.contents: dict[str, bytes] = {}
        self._budget = KEEP_BYTES
        self._held: list[tuple[str, FileInfo, bytes | None]] = []
        self._held_cost = 0
        self._off = False
        self._lock = ExitStack()
        #: The push lock, held from the moment batches are sent while scanning.
        self.lease: _Lease | None = None
        #: The ModifyIndex of the empty manifest committed before the first batch.
        self.index = 0
        self._limit = 0
        self._packer: _Packer[_Write] = _Packer(
            lambda w: w.cost, count=TXN_MAX_OPS - 1, total=TXN_MAX_BODY - 1024
        )
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[int]] = deque()
        #: Paths sent (or in flight): what an undo deletes.
        self.sent: set[str] = set()
        self._committed = False

    def __enter__(self) -> _FirstPush:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.lease is not None and not self._committed:
                self._undo()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            self._lock.close()

    def add(self, rel: str, info: FileInfo, data: bytes | None) -> None:
        """The scan's sink: one file, with its bytes when the scan read them."""
        if self._off:
            self._keep(rel, data)
        elif self.lease is None:
            self._held.append((rel, info, data))
            self._held_cost += _Write.of(self.run.prefix, rel, info, None).cost
            if len(self._held) > SINGLE_TXN_FILES or self._held_cost > TXN_MAX_BODY:
                self._start()
        elif info.size > self._limit:
            # The planned push refuses it; nothing more is worth sending.
            self._off = True
            self._keep(rel, data)
        else:
            write = _Write.of(self.run.prefix, rel, info, data)
            if write.cost > _LARGE:
                self._keep(rel, data)  # sent alone by `finish`
            elif (full := self._packer.add(write)) is not None:
                self._send(full)

    def _keep(self, rel: str, data: bytes | None) -> None:
        if data is not None and len(data) <= self._budget:
            self.contents[rel] = data
            self._budget -= len(data)

    def _start(self) -> None:
        assert self.remote is not None
        held, self._held = self._held, []
        if _is_empty(self.remote.result()):
            run = self.run
            lease = self._lock.enter_context(push_lock(run))
            under = remote.read(
                run.client, run.prefix, lock_wait=run.lock_wait, session=lease.session
            )
            if _is_empty(under):
                self._limit = run.client.max_value_size()
                self.index = _commit_first(run, {}, 0, self._limit)
                self.lease = lease
                self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="fileconsul-push")
            else:
                self._lock.close()  # another push got there first: plan on its tree
        self._off = self.lease is None
        for item in held:
            self.add(*item)

    def _send(self, batch: list[_Write]) -> None:
        assert self._pool is not None
        assert self.lease is not None
        self.sent.update(w.path for w in batch)
        check = kv_check_index(manifest_key(self.run.prefix), self.index)
        self._pending.append(self._pool.submit(_send_batch, self.run, check, batch, self._limit))
        if len(self._pending) >= IN_FLIGHT:
            self._pending.popleft().result()
            self.lease.keep()

    def scanned(self) -> dict[str, bytes]:
        """The scan is over: the bytes of every file not sent, for the planned push."""
        for rel, _, data in self._held:
            self._keep(rel, data)
        self._held = []
        for write in self._packer.current:
            if write.value is not None:
                self.contents[write.path] = write.value
        return self.contents

    def finish(self, prepared: _Prepared) -> int:
        """Send what the scan did not, and commit the manifest of the whole tree."""
        assert self.lease is not None
        while self._pending:
            self._pending.popleft().result()
        rest = [w for w in prepared.writes if w.path not in self.sent]
        self.sent.update(w.path for w in rest)
        batches, large = _pack(rest)
        revision = _send_and_commit(
            self.run, self.lease, replace(prepared, batches=batches, large=large), self.index
        )
        self._committed = True
        return revision

    def _undo(self) -> None:
        """Delete every key sent, then the empty manifest, each transaction checking that
        the manifest is still the empty one: a push that did commit is never undone. Best
        effort: what is left behind is uncommitted, and readers ignore it."""
        for future in self._pending:
            with suppress(Exception):
                future.result()
        run = self.run
        manifest = manifest_key(run.prefix)
        check = kv_check_index(manifest, self.index)
        keys = [f"{run.prefix}/{path}" for path in sorted(self.sent)]
        with suppress(FileconsulError):
            for batch in _batches(keys, lambda _: 1, count=TXN_MAX_OPS - 1, total=TXN_MAX_OPS):
                run.client.txn([check, *(kv_delete(key) for key in batch)])
            run.client.txn([kv_delete_cas(manifest, self.index)])


def in_flight(
    work: Callable[[_T], _R], items: Sequence[_T], *, depth: int, name: str
) -> Generator[_R]:
    """`work(item)` for each item, results in order, up to `depth` of them running at once."""
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix=name) as pool:
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batches(
    items: Sequence[_T], weight: Callable[[_T], int], *, count: int, total: int
) -> list[list[_T]]:
    """Consecutive groups of at most `count` items whose weights add up to at most `total`
    (an item heavier than `total` goes alone)."""
    packer = _Packer(weight, count=count, total=total)
    batches = [full for item in items if (full := packer.add(item)) is not None]
    return batches + ([packer.current] if packer.current else [])


class _Packer(Generic[_T]):
    """Packs items one at a time into groups of `_batches`' shape."""

    def __init__(self, weight: Callable[[_T], int], *, count: int, total: int) -> None:
        self.weight, self.count, self.total = weight, count, total
        self.current: list[_T] = []
        self.size = 0

    def add(self, item: _T) -> list[_T] | None:
        """Add `item`; the group it closed when it did not fit the current one."""
        cost = self.weight(item)
        full = None
        if self.current and (len(self.current) >= self.count or self.size + cost > self.total):
            full, self.current, self.size = self.current, [], 0
        self.current.append(item)
        self.size += cost
        return full


def _content(run: Run, write: _Write, limit: int) -> bytes:
    """The bytes to write, re-checked against the hash the plan was made with."""
    if write.value is not None:
        return write.value
    assert write.target is not None
    data, _ = tree.read_file(run.settings.basepath, write.path, limit)
    if content_hash(data) != write.target.hash:
        raise ConflictError(
            f"{write.path} changed while it was being pushed; run push again when it is quiet"
        )
    return data


def _op(run: Run, write: _Write, limit: int) -> Op:
    key = f"{run.prefix}/{write.path}"
    if write.target is None:
        return kv_delete(key)
    return kv_set(key, _content(run, write, limit), hash_to_flags(write.target.hash))


def _manifest_op(run: Run, manifest: bytes, index: int) -> Op:
    flags = hash_to_flags(content_hash(manifest))
    return kv_cas(manifest_key(run.prefix), manifest, flags, index)


def _commit(run: Run, ops: list[Op] | bytes) -> int:
    """Run a write transaction; the ModifyIndex it committed at."""
    try:
        results = run.client.txn(ops)
    except TxnFailed as exc:
        raise ConflictError(
            "another push committed first; nothing of this transaction was written "
            "(run status, then push again)"
        ) from exc
    return max((int(r.get("ModifyIndex") or 0) for r in results), default=0)


def _commit_manifest(run: Run, manifest: bytes, index: int) -> int:
    if 4 * len(manifest) // 3 < _LARGE:
        return _commit(run, [_manifest_op(run, manifest, index)])
    flags = hash_to_flags(content_hash(manifest))
    if not run.client.put(manifest_key(run.prefix), manifest, flags=flags, cas=index):
        raise ConflictError("another push committed first (run status, then push again)")
    entry, _ = run.client.get(manifest_key(run.prefix))
    return entry.modify_index if entry else 0


# -- pull -------------------------------------------------------------------------------------


def pull(
    run: Run,
    *,
    force: bool = False,
    dry_run: bool = False,
    max_delete: int | None = None,
    entries: list[KVEntry] | None = None,
) -> Outcome:
    """Apply remote changes. `entries`, when given, is the whole tree already read (a
    consul-watch payload) and Consul is not asked again."""
    root = run.settings.basepath
    with state.local_lock(root):
        record = state.load(root, run.prefix)
        if entries is not None:
            scan = tree.scan(root, record.hash_cache)
            tree_ = remote.from_entries(run.prefix, entries)
        else:
            scan, tree_ = _scan_and_read(run, record)
        p = plan(scan.files, record.files, tree_.files)
        _refuse_conflicts(p, "pull", force)
        actions = p.pulls(force=force)
        check_deletes(actions, len(scan.files), max_delete=max_delete, force=force, side="locally")
        outcome = Outcome(actions, tree_.committed_index, dry_run, _warnings(scan, tree_))
        outcome.skipped += [(key, why) for key, why in tree_.unsafe]
        if dry_run:
            return outcome
        with run.bar("pulling", len(actions)):
            applied = _apply(run, tree_, scan, actions, outcome)
        outcome.actions = applied
        _advance(record, p, applied, tree_.committed_index)
        rewritten = {a.path for a in applied}
        record.hash_cache = {p: c for p, c in scan.hash_cache.items() if p not in rewritten}
        state.save(root, record)
        return outcome


def _apply(
    run: Run, tree_: RemoteTree, scan: tree.Scan, actions: list[Action], outcome: Outcome
) -> list[Action]:
    """Stage every new file (verified) beside its place, then rename them all in."""
    with tree.TreeWriter(run.settings.basepath) as writer:
        # Under the local lock no other fileconsul writes here: these are a killed pull's.
        for rel in scan.leftovers:
            writer.remove_leftover(rel)
        applied: list[Action] = []
        try:
            with closing(_stage(run, tree_, writer, [a for a in actions if a.target])) as staged:
                for action, skipped in staged:
                    if skipped is not None:
                        outcome.skipped.append((action.path, skipped))
                        continue
                    applied.append(action)
                    run.tick()
            applied += [a for a in actions if a.target is None]
            changed = writer.local_changes([a.path for a in applied], scan.stats)
            if changed:
                raise ConflictError(
                    f"{changed[0]} changed locally during the pull; nothing was changed "
                    "(run pull again)"
                )
            writer.durable()
        except BaseException as exc:
            writer.discard_all()
            if isinstance(exc, OSError):
                raise InvalidInput(
                    f"cannot write the pulled files ({exc.strerror}); nothing was changed"
                ) from exc
            raise
        for action in applied:
            if action.target is None:
                writer.delete(action.path)
        writer.commit_all()
        writer.sync_dirs()
    return sorted(applied, key=lambda a: a.path)


def _stage(
    run: Run, tree_: RemoteTree, writer: tree.TreeWriter, actions: list[Action]
) -> Generator[tuple[Action, str | None]]:
    """Stage each action's value, verified against its hash, beside its place; with the reason
    when its path was skipped. Values are read in batched transactions, several in flight, and
    each batch is written to disk by the thread that read it."""

    def stage_batch(batch: list[Action]) -> list[tuple[Action, str | None]]:
        known = [(a, tree_.values[a.path]) for a in batch if a.path in tree_.values]
        fetched = _fetch_batch(run, [a for a in batch if a.path not in tree_.values])
        return [(action, _stage_one(writer, action, data)) for action, data in known + fetched]

    batches = _batches(
        actions,
        lambda a: a.target.size if a.target else 0,
        count=TXN_MAX_OPS,
        total=FETCH_BATCH_BYTES,
    )
    with closing(in_flight(stage_batch, batches, depth=IN_FLIGHT, name="fileconsul-pull")) as done:
        for results in done:
            yield from results


def _stage_one(writer: tree.TreeWriter, action: Action, data: bytes) -> str | None:
    assert action.target is not None
    try:
        writer.stage(action.path, data, action.target.mode)
    except tree.UnsafeLocalPath as exc:
        return str(exc)
    except OSError as exc:
        raise InvalidInput(
            f"cannot write {action.path} ({exc.strerror}); nothing was changed "
            "(free some space or fix the permissions, then pull again)"
        ) from exc
    return None


def _fetch_batch(run: Run, batch: list[Action]) -> list[tuple[Action, bytes]]:
    if not batch:
        return []
    keys = [f"{run.prefix}/{a.path}" for a in batch]
    for attempt in range(3):
        try:
            values = run.client.txn_values([kv_get(key) for key in keys])
        except TxnFailed as exc:
            raise ConflictError(
                "the remote tree changed during the pull; nothing was changed (run pull again)"
            ) from exc
        bad = [
            a
            for a, key in zip(batch, keys, strict=True)
            if a.target is not None and content_hash(values.get(key, b"")) != a.target.hash
        ]
        if not bad:
            return [(a, values[key]) for a, key in zip(batch, keys, strict=True)]
        if attempt < 2:
            time.sleep(0.2 * (attempt + 1))
    raise IntegrityError(
        f"the value of {bad[0].path} never matched its hash ({len(bad)} such files); nothing "
        "was changed (push it again from a node that has the right content)"
    )
