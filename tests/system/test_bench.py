"""The benchmark at its smallest size: a smoke check that it runs and reports every figure.
Its numbers are not asserted here: timing belongs to the benchmark, not to the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "first push",
    "consul kv import",
    "floor: txn writes, 1 in flight",
    "floor: txn writes, 4 in flight",
    "status, no change",
    "status, one changed",
    "pull into empty dir",
    "consul kv export",
    "floor: one ?recurse read",
    "floor: creating the files",
    "floor: start-up",
    "floor: txn gets, 1 in flight",
    "floor: txn gets, 4 in flight",
    "pull one changed",
    "push one changed",
    "log, every kept revision",
    "diff of one file",
    "rollback of one changed file",
}


def test_the_benchmark_runs_at_the_smallest_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--sizes",
            "100",
            "--runs",
            "1",
            "--watch-pushes",
            "3",
            "--fleet-sizes",
            "100",
            "--watchers",
            "3",
            "--fleet-pushes",
            "2",
            "--fleet-idle",
            "1",
            "--ui-nodes",
            "50",
            "--replication-sizes",
            "100",
            "--replication-commits",
            "3",
            "--delivery-sizes",
            "100",
            "--delivery-pushes",
            "3",
            "--signing-sizes",
            "100",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    (size,) = report["sizes"]
    assert size["files"] == 100
    assert set(size["cases"]) == CASES
    assert all(case["seconds"] > 0 for case in size["cases"].values())
    assert size["cases"]["pull into empty dir"]["received_bytes"] >= 100 * 4096
    assert size["cases"]["status, no change"]["peak_rss_mb"] > 0
    assert set(size["ratios"]) >= {"first push / consul kv import", "first push / floor writes"}
    held = size["history"]
    assert held["revisions"] == 100  # the default kept, after more pushes than that
    assert held["by_kind"]["log"]["keys"] == 100
    assert held["by_kind"]["manifests"]["keys"] == 1
    assert held["by_kind"]["blobs"]["bytes"] >= 99 * 4096  # each replaced value kept once
    assert report["watch"]["pushes"] == 3
    assert "first push" in result.stdout
    deliveries = {row["design"].split()[0]: row for row in report["delivery"]}
    assert set(deliveries) >= {"fileconsul", "whole-tree"}
    assert deliveries["fileconsul"]["pushes"] == 3
    assert deliveries["fileconsul"]["p50_ms"] > 0
    fleet = {row["design"].split()[0]: row for row in report["fleet"]}
    assert set(fleet) >= {"fileconsul"}
    assert fleet["fileconsul"]["watchers"] == 3
    assert fleet["fileconsul"]["server_kib_written_per_watcher_per_push"] > 0
    (dashboard,) = report["ui"]
    assert dashboard["nodes"] == 50
    assert dashboard["page_seconds"] > 0
    assert dashboard["json_bytes"] > 50 * 100
    assert dashboard["page / floor page"] > 0
    assert dashboard["json / floor recurse"] > 0
    assert "dashboard (fileconsul ui)" in result.stdout
    (replicated,) = report["replication"]
    assert (replicated["files"], replicated["commits"]) == (100, 3)
    assert replicated["p99_ms"] >= replicated["p50_ms"] > 0
    # A one-file revision takes about that file from the source, not the tree (100 of 4 KiB).
    assert 4096 < replicated["from_source_bytes_per_revision"] < 100 * 4096
    assert "replication:" in result.stdout
    (signed,) = report["signing"]
    assert signed["files"] == 100
    for case in ("first push", "pull into empty dir", "push one changed", "delivery to a watcher"):
        assert signed["cases"][f"{case}, signed"] > 0
        assert signed["cases"][f"{case}, unsigned"] > 0
    assert signed["verify_one_revision_ms"]["median_ms"] > 0
    assert set(signed["hash_every_file_ms"]) == {"sha256", "blake2b"}
    assert "signed revisions, 100 files" in result.stdout
