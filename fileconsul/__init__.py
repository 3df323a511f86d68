"""fileconsul: share a directory tree across a Consul cluster through its KV store."""

from __future__ import annotations

__version__ = "0.1.0"
