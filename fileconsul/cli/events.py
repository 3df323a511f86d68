"""What a long-running watch says it did: one line per event, timestamped text for a person or
one JSON object for journald and log shippers (`--log-format json`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Literal, TextIO

Format = Literal["text", "json"]
Level = Literal["info", "warning", "error"]


class Events:
    """Writes each event: text goes to stdout (warnings and errors to stderr), JSON to stdout
    only, one object per line: {"time", "level", "event", "message", ...its facts}."""

    def __init__(
        self,
        form: Format = "text",
        *,
        quiet: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.form, self.quiet = form, quiet
        self.out, self.err = out or sys.stdout, err or sys.stderr

    def __call__(self, event: str, message: str, *, level: Level = "info", **facts: Any) -> None:
        if self.quiet and level == "info":
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.form == "json":
            record = {"time": stamp, "level": level, "event": event, "message": message, **facts}
            print(json.dumps(record), file=self.out, flush=True)
            return
        stream = self.out if level == "info" else self.err
        print(f"{stamp} {event}: {message}", file=stream, flush=True)
