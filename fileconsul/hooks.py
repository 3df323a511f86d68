"""Running the operator's commands around an apply: `--exec` after changes were applied,
`--on-failure` when applying or the hook failed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hooks:
    exec_cmd: str | None = None
    on_failure: str | None = None


def run_hook(
    command: str,
    *,
    basepath: Path,
    prefix: str,
    revision: int | None,
    changes: Sequence[tuple[str, str]],
    error: str | None = None,
) -> int:
    """Run `command` through the shell in the basepath; its exit status. The changes arrive as
    JSON on stdin and, unless it runs for a failure (`error`), in $FILECONSUL_CHANGED and
    $FILECONSUL_REVISION."""
    body = {
        "prefix": prefix,
        "revision": revision,
        "changes": [{"path": path, "change": change} for path, change in changes],
    }
    env = dict(os.environ)
    env["FILECONSUL_PREFIX"] = prefix
    env["FILECONSUL_BASEPATH"] = str(basepath)
    if error is not None:
        env["FILECONSUL_ERROR"] = error
    elif revision is not None:
        env["FILECONSUL_REVISION"] = str(revision)
        env["FILECONSUL_CHANGED"] = "\n".join(path for path, _ in changes)
    completed = subprocess.run(
        command,
        shell=True,
        cwd=basepath,
        env=env,
        input=json.dumps(body).encode(),
        check=False,
    )
    return completed.returncode
