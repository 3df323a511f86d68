"""Scanning the local tree: files, modes, links, leftovers and the hash cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fileconsul.local import scan
from tests.model.values import info


def old(path: Path) -> None:
    """Out of the racy-timestamp window, so that its hash may be cached."""
    os.utime(path, (time.time() - 10, time.time() - 10))


def test_scan_sees_files_modes_ignores_links_and_leftovers(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "d" / "run.sh").chmod(0o755)
    (tmp_path / "skip.log").write_text("x")
    (tmp_path / ".fileconsulignore").write_text("*.log\n")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "bad\\name").write_text("x")
    (tmp_path / ".fileconsul-tmp-dead-1").write_text("left by a killed pull")
    (tmp_path / ".fileconsul").mkdir()
    (tmp_path / ".fileconsul" / "lock").write_text("")
    result = scan.scan(tmp_path)
    assert sorted(result.files) == [".fileconsulignore", "d/run.sh"]
    assert result.files["d/run.sh"] == info(b"#!/bin/sh\n", 0o755)
    assert result.skipped == [("link", "symbolic link, not followed")]
    assert result.unsafe == [("bad\\name", "backslash in name")]
    assert result.leftovers == [".fileconsul-tmp-dead-1"]


def test_a_cached_hash_spares_reading_the_file_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    old(path)
    first = scan.scan(tmp_path)
    assert first.bytes_hashed == 1000
    again = scan.scan(tmp_path, first.hash_cache)
    assert again.bytes_hashed == 0
    assert again.files == first.files
    path.write_bytes(b"y" * 1000)
    changed = scan.scan(tmp_path, first.hash_cache)
    assert changed.bytes_hashed == 1000
    assert changed.files["f"] == info(b"y" * 1000)


def test_a_file_written_within_the_racy_window_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / "fresh").write_text("just written")
    assert scan.scan(tmp_path).hash_cache == {}


def test_a_push_keeps_the_bytes_it_read_up_to_its_budget(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a" * 10)
    (tmp_path / "b").write_bytes(b"b" * 10)
    kept = scan.scan(tmp_path, keep_bytes=15).contents
    assert len(kept) == 1
    assert next(iter(kept.values())) in (b"a" * 10, b"b" * 10)
