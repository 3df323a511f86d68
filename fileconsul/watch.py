"""Remote changes applied without anyone running pull: the blocking-query loop, the
consul-watch handler payload, hooks, the fleet report and the local watchdog push.

Both ways (`fileconsul watch` and `consul watch ... fileconsul pull`) go through
`apply_remote`, the one code path for "remote changed, apply it".
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from fileconsul import fleet, state, sync
from fileconsul.consul import ConsulClient, KVEntry
from fileconsul.errors import (
    ConflictError,
    ConsulUnavailable,
    FileconsulError,
    InvalidInput,
    PermissionDenied,
)
from fileconsul.keys import INTERNAL_DIR
from fileconsul.tree import TMP_PREFIX

Log = Callable[[str], None]


@dataclass(frozen=True)
class Hooks:
    exec_cmd: str | None = None
    on_failure: str | None = None


@dataclass(frozen=True)
class ApplyOptions:
    hooks: Hooks = Hooks()
    report: bool = True
    node: str | None = None
    force: bool = False
    dry_run: bool = False
    max_delete: int | None = None


@dataclass
class Applied:
    outcome: sync.Outcome | None = None
    error: FileconsulError | None = None
    hook_exit: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return self.outcome.exit_code if self.outcome else 0

    @property
    def failed(self) -> bool:
        return self.error is not None or self.hook_exit not in (None, 0)


def run_hook(command: str, run: sync.Run, outcome: sync.Outcome | None, error: str | None) -> int:
    """Run a hook through the shell in the basepath. The changes arrive as JSON on stdin and,
    unless it runs for a failure (`error`), in $FILECONSUL_CHANGED and $FILECONSUL_REVISION."""
    changes = outcome.actions if outcome and not outcome.dry_run else []
    body = {
        "prefix": run.prefix,
        "revision": outcome.revision if outcome else None,
        "changes": [{"path": a.path, "change": a.change} for a in changes],
    }
    env = dict(os.environ)
    env["FILECONSUL_PREFIX"] = run.prefix
    env["FILECONSUL_BASEPATH"] = str(run.settings.basepath)
    if error is not None:
        env["FILECONSUL_ERROR"] = error
    elif outcome is not None:
        env["FILECONSUL_REVISION"] = str(outcome.revision)
        env["FILECONSUL_CHANGED"] = "\n".join(a.path for a in changes)
    completed = subprocess.run(
        command,
        shell=True,
        cwd=run.settings.basepath,
        env=env,
        input=json.dumps(body).encode(),
        check=False,
    )
    return completed.returncode


def apply_remote(
    run: sync.Run, options: ApplyOptions, *, entries: list[KVEntry] | None = None
) -> Applied:
    """Pull, then run the hooks and write the fleet report: the one path for remote changes."""
    applied = Applied()
    try:
        applied.outcome = sync.pull(
            run,
            force=options.force,
            dry_run=options.dry_run,
            max_delete=options.max_delete,
            entries=entries,
        )
    except FileconsulError as exc:
        applied.error = exc
    outcome = applied.outcome
    changed = outcome is not None and not outcome.dry_run and bool(outcome.actions)
    if changed and options.hooks.exec_cmd:
        applied.hook_exit = run_hook(options.hooks.exec_cmd, run, outcome, None)
        if applied.hook_exit != 0:
            applied.notes.append(f"hook exited {applied.hook_exit}: {options.hooks.exec_cmd}")
    if applied.failed and options.hooks.on_failure:
        reason = str(applied.error) if applied.error else f"hook exited {applied.hook_exit}"
        run_hook(options.hooks.on_failure, run, outcome, reason)
    if options.report and not options.dry_run and not isinstance(applied.error, ConsulUnavailable):
        _report(run, options, applied)
    return applied


def report_push(run: sync.Run, node: str | None, outcome: sync.Outcome) -> list[str]:
    """After a push that left nothing to pull, this node holds the revision it committed:
    it reports so, as a pull would. Notes on what could not be done."""
    if outcome.dry_run or outcome.pending:
        return []
    applied = Applied(outcome=sync.Outcome(revision=outcome.revision))
    _report(run, ApplyOptions(node=node), applied)
    return applied.notes


def _report(run: sync.Run, options: ApplyOptions, applied: Applied) -> None:
    if isinstance(applied.error, ConflictError):
        result: fleet.Result = "conflict"
    elif applied.failed:
        result = "error"
    else:
        result = "ok"
    outcome = applied.outcome
    try:
        if outcome is not None:
            revision = outcome.revision
        else:
            revision = state.load(run.settings.basepath, run.prefix).revision
    except FileconsulError:
        revision = 0
    try:
        report = fleet.Report(
            node=fleet.node_name(run.client, options.node),
            revision=revision,
            time=fleet.now(),
            result=result,
            message=str(applied.error or ""),
            applied=len(outcome.actions) if outcome else 0,
            hook=options.hooks.exec_cmd,
            hook_exit=applied.hook_exit,
        )
        previous = fleet.read_one(run.client, run.prefix, report.node)
        if report.applied or previous is None or not previous.same_state(report):
            fleet.write(run.client, run.prefix, report)
    except FileconsulError as exc:
        applied.notes.append(f"fleet report not written ({exc})")


# -- the consul watch handler -------------------------------------------------------------


def parse_payload(text: str, prefix: str) -> list[KVEntry] | None:
    """The tree from a `consul watch -type keyprefix` payload; None when Consul must be read
    (a `-type key` payload, or `null`: an empty prefix or a missing key)."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"the consul watch payload on stdin is not JSON ({exc}); run fileconsul from "
            "`consul watch -type keyprefix` or `-type key`"
        ) from exc
    if data is None:
        return None
    if isinstance(data, dict) and "Key" in data:
        return None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "Key" in e for e in data):
        raise InvalidInput(
            "the consul watch payload on stdin is neither a key nor a key prefix result; "
            "use `consul watch -type keyprefix` or `-type key`"
        )
    outside = [e["Key"] for e in data if not str(e["Key"]).startswith(prefix + "/")]
    if outside:
        raise InvalidInput(
            f"the consul watch payload holds {outside[0]!r}, outside {prefix + '/'}: watch "
            f"`-prefix {prefix}/` or pass the matching --prefix"
        )
    try:
        return [KVEntry.from_json(e) for e in data]
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"the consul watch payload has a malformed entry ({exc})") from exc


# -- the blocking-query loop --------------------------------------------------------------


class Stopped(BaseException):
    """Raised by the signal handler to leave a blocking query; never during an apply."""


class Stopper:
    """SIGTERM and SIGINT stop the watch between applies, never in the middle of one."""

    def __init__(self) -> None:
        self.requested = False
        self._busy = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self._busy:
            raise Stopped

    @contextmanager
    def busy(self) -> Iterator[None]:
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
        if self.requested:
            raise Stopped

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        if self.requested:
            raise Stopped


@dataclass
class WatchOptions:
    apply: ApplyOptions
    random_delay: float = 0.0
    once: bool = False
    wait: float = 300.0
    min_interval: float = 0.05
    max_backoff: float = 30.0


def watch(
    run: sync.Run,
    options: WatchOptions,
    stopper: Stopper,
    on_apply: Callable[[Applied], object],
    log: Log,
) -> int:
    """Apply what is pending, then every change under the prefix, until stopped.

    Returns 0 when stopped by a signal; with `once`, the exit code of the one apply.
    """
    index: int | None = None
    pending = True
    backoff = 0.0
    last_wake = 0.0
    try:
        while True:
            try:
                if index is None:
                    # Read the index before applying, so a change during the apply wakes us.
                    index = max(run.client.keys(run.prefix + "/", stale=run.stale)[1], 1)
                if not pending:
                    _, new_index = run.client.keys(
                        run.prefix + "/", index=index, wait=options.wait, stale=run.stale
                    )
                    backoff = 0.0
                    if new_index == index:
                        continue
                    # An index that went backwards (a restarted or restored cluster) is taken
                    # as it is: it is never below 1, and the apply below reads afresh.
                    index, pending = max(new_index, 1), True
                    stopper.sleep(max(0.0, last_wake + options.min_interval - time.monotonic()))
            except (ConsulUnavailable, PermissionDenied) as exc:
                backoff = _back_off(backoff, options, stopper, log, exc)
                # Anything may have happened meanwhile, the agent may even hold a new, empty
                # store whose index is below ours: start over from a fresh index and apply.
                index, pending = None, True
                continue
            last_wake = time.monotonic()
            if options.random_delay > 0:
                stopper.sleep(random.uniform(0, options.random_delay))
            with stopper.busy():
                applied = apply_remote(run, options.apply)
            on_apply(applied)
            if options.once:
                return applied.exit_code
            if isinstance(applied.error, ConsulUnavailable | PermissionDenied):
                backoff = _back_off(backoff, options, stopper, log, applied.error)
                continue
            pending = False
    except Stopped:
        return 0


def _back_off(
    backoff: float, options: WatchOptions, stopper: Stopper, log: Log, exc: Exception
) -> float:
    """Sleep a doubling delay, capped, while Consul is unreachable or refuses; the new delay."""
    backoff = min(max(backoff * 2, 0.5), options.max_backoff)
    log(f"{exc}; retrying in {backoff:.1f}s")
    stopper.sleep(backoff)
    return backoff


# -- local changes pushed (watch --push) --------------------------------------------------


class LocalPusher:
    """Watches the basepath and pushes after a quiet period; rescans rather than trusting
    event paths, since editors save by writing a temporary file and renaming it."""

    def __init__(
        self, root: Path, push: Callable[[], None], log: Log, debounce: float = 0.5
    ) -> None:
        from watchdog.observers import Observer

        self.root = root
        self.push = push
        self.log = log
        self.debounce = debounce
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._last = 0.0
        self._observer = Observer()
        self._observer.schedule(_handler(self), str(root), recursive=True)
        self._thread = threading.Thread(target=self._loop, name="fileconsul-push", daemon=True)

    def start(self) -> None:
        self._observer.start()
        self._changed.set()  # what changed before the watch started is pushed too
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join()
        self._thread.join()

    def touched(self, path: str) -> None:
        parts = os.path.relpath(path, self.root).split(os.sep)
        # A pull stages files in temporary names and temporary new directories.
        if parts[0] == INTERNAL_DIR or any(part.startswith(TMP_PREFIX) for part in parts):
            return
        self._last = time.monotonic()
        self._changed.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._changed.wait(0.1):
                continue
            if time.monotonic() - self._last < self.debounce:
                continue
            self._changed.clear()
            try:
                self.push()
            except FileconsulError as exc:
                self.log(f"push: {exc}")


def _handler(pusher: LocalPusher) -> Any:
    """A watchdog handler that only notes that something under the root moved."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory and event.event_type == "modified":
                return
            for path in (event.src_path, event.dest_path):
                if path:
                    pusher.touched(os.fsdecode(path))

    return Handler()


def client_for(run: sync.Run) -> ConsulClient:
    """A second client on the same settings, for the local push thread."""
    return ConsulClient(run.settings.consul)
