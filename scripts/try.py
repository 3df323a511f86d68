"""Push a tree from one directory and pull it into another, through a throwaway agent."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.consul_agent import Agent, consul_binary


def run(*args: str, expect: int = 0) -> None:
    print(f"$ {shlex.join(args)}", flush=True)
    code = subprocess.run(args, check=False).returncode
    if code != expect:
        sys.exit(f"unexpected exit code {code} (expected {expect})")
    print(flush=True)


def main() -> None:
    agent = Agent(consul_binary()).start()
    try:
        with tempfile.TemporaryDirectory(prefix="fileconsul-try-") as tmp:
            one, two = Path(tmp, "one"), Path(tmp, "two")
            (one / "bin").mkdir(parents=True)
            two.mkdir()
            (one / "bin" / "hello").write_text("#!/bin/sh\necho hello from fileconsul\n")
            (one / "bin" / "hello").chmod(0o755)
            (one / "app.conf").write_text("listen = 8080\n")
            os.environ["CONSUL_HTTP_ADDR"] = agent.addr
            fc = str(Path(sys.executable).parent / "fileconsul")
            run(fc, "status", "--basepath", str(one), expect=1)
            run(fc, "push", "--basepath", str(one))
            run(fc, "pull", "--basepath", str(two))
            run(fc, "status", "--basepath", str(two))
            run(str(two / "bin" / "hello"))
    finally:
        agent.cleanup()
    print("fileconsul works: the tree went from one directory to the other through Consul.")


if __name__ == "__main__":
    main()
