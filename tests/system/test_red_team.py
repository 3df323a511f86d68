"""The red team: a watcher and a pulling node that trust one key, and an attacker who may
write anything in Consul's KV store (the dev agent has no ACLs: the prefix, its history and
everything beside it) but does not hold the key. Each attack changes 0 bytes on either node,
exits 10, shows `untrusted` in the fleet report, and the key holder's next signed push is
applied by both. On an unsigned tree, without keys, nothing changes for anyone."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash

from fileconsul.model import manifest
from fileconsul.model.facts import FileInfo
from fileconsul.model.records import Change, Commit
from fileconsul.store.client import ConsulClient
from tests.collide import collide
from tests.conftest import KV, Node
from tests.processes import background, fileconsul_args, wait_until

#: Contents of 16 bytes, for which an xxh3 collision is built in microseconds.
SHORT = b"trusted content!"


@dataclass
class Attacker:
    """Full write on the KV store, no key."""

    kv: KV
    prefix: str

    def write(self, items: dict[str, bytes], deletes: tuple[str, ...] = ()) -> None:
        """One transaction; each value's Flags hold its xxh3, as fileconsul writes them."""
        ops: list[dict[str, Any]] = [{"KV": {"Verb": "delete", "Key": key}} for key in deletes]
        ops += [
            {
                "KV": {
                    "Verb": "set",
                    "Key": key,
                    "Value": base64.b64encode(value).decode(),
                    "Flags": xxhash.xxh3_64_intdigest(value),
                }
            }
            for key, value in items.items()
        ]
        response = httpx.put(f"{self.kv.url}/v1/txn", json=ops)
        assert response.status_code == 200, response.text

    def meta(self, name: str) -> str:
        return f"{self.prefix}.fileconsul/{name}"

    def value(self, key: str) -> bytes:
        found: bytes = self.kv.meta(self.prefix)[key]["value"]
        return found


@dataclass
class Fleet:
    holder: Node
    watcher: Node
    puller: Node
    kv: KV
    sign: list[str]
    trust: list[str]
    pushes: int = 0

    def report(self, node: str) -> dict[str, Any]:
        entry = self.kv.meta(self.holder.prefix).get(
            f"{self.holder.prefix}.fileconsul/nodes/{node}"
        )
        return {} if entry is None else dict(json.loads(entry["value"]))

    def pull(self) -> Any:
        return self.puller.run("pull", *self.trust, "--node", "puller")

    def signed_push(self, *extra: str) -> None:
        """The key holder's next push, and both nodes apply it."""
        self.pushes += 1
        stamp = f"signed push {self.pushes}\n"
        self.holder.write("counter", stamp)
        result = self.holder.run("push", *self.sign, "--node", "holder", *extra)
        assert result.exit_code == 0, result.output
        wait_until(
            lambda: (
                self.watcher.root.joinpath("counter").exists()
                and self.watcher.read("counter") == stamp.encode()
                and self.report("watcher").get("result") == "ok"
            ),
            what="the watcher to apply the signed push",
        )
        result = self.pull()
        assert result.exit_code == 0, result.output
        assert self.puller.read("counter") == stamp.encode()
        assert self.report("puller")["result"] == "ok"
        assert self.watcher.files() == self.holder.files() == self.puller.files()

    def refused(self, attack: Callable[[], None], reason: str) -> None:
        """`attack` changes nothing on either node; both report it untrusted (exit 11)."""
        before = (self.watcher.files(), self.puller.files())
        started = time.time()
        attack()
        wait_until(
            lambda: (
                self.report("watcher").get("result") == "untrusted"
                and self.report("watcher")["time"] >= started
            ),
            what=f"the watcher to refuse ({reason})",
        )
        result = self.pull()
        assert result.exit_code == 11, result.output
        assert reason in result.output, result.output
        assert self.report("puller")["result"] == "untrusted"
        assert reason in self.report("puller")["message"]
        status = self.holder.run("status", "--fleet", "--json")
        states = {n["node"]: n["state"] for n in json.loads(status.stdout)["nodes"]}
        assert states["watcher"] == states["puller"] == "untrusted"
        assert (self.watcher.files(), self.puller.files()) == before


def swapping(key: str, value: bytes) -> Callable[..., Any]:
    """ConsulClient.txn, with the value a transaction sets at `key` swapped for `value`."""
    real = ConsulClient.txn

    def txn(self: ConsulClient, ops: Any, *, stale: bool = False) -> Any:
        sets = [op["KV"] for op in ops if "KV" in op] if isinstance(ops, list) else []
        for op in sets:
            if op.get("Key") == key and op.get("Verb") == "set":
                op["Value"] = base64.b64encode(value).decode()
        return real(self, ops, stale=stale)

    return txn


def _holds(node: Node, path: str, content: bytes) -> bool:
    return node.root.joinpath(path).exists() and node.read(path) == content


def fresh_pull(make_node: Any, name: str, trust: list[str]) -> tuple[Node, Any]:
    node: Node = make_node(name)
    return node, node.run("pull", *trust, "--node", name)


def test_every_attack_without_the_key_changes_nothing_and_the_next_signed_push_lands(
    make_node: Any, kv: KV, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, watcher, puller = make_node("holder"), make_node("watcher"), make_node("puller")
    attacker_dir = make_node("attacker")
    for name in ("release", "rogue"):
        assert holder.run("keygen", str(tmp_path / name)).exit_code == 0
    sign = ["--sign-key", str(tmp_path / "release")]
    trust = ["--trusted-keys", str(tmp_path / "release.pub")]
    fleet = Fleet(holder, watcher, puller, kv, sign, trust)
    red = Attacker(kv, holder.prefix)
    prefix = holder.prefix
    holder.write("app.conf", SHORT)
    holder.write("bin/run", "#!/bin/sh\necho run\n", 0o755)
    assert holder.run("push", *sign, "--node", "holder").exit_code == 0
    first = {k: v["value"] for k, v in kv.tree(prefix + ".fileconsul").items()}
    first_values = kv.files(prefix)
    watch = fileconsul_args(watcher, "watch", *trust, "--node", "watcher", "--drift-scan", "0")
    with background(watch):
        fleet.signed_push()

        def plain_push(*extra: str) -> None:
            assert attacker_dir.run("pull").exit_code == 0
            attacker_dir.write("app.conf", "attacker's\n")
            result = attacker_dir.run("push", "--no-report", *extra)
            assert result.exit_code == 0, result.output

        # An unsigned push.
        fleet.refused(plain_push, "is not signed")
        fleet.signed_push()

        # A head with a made-up signature, claiming the trusted key.
        def made_up() -> None:
            head = json.loads(red.value(red.meta("head")))
            head["message"] = "nothing to see here"
            head["signature"]["value"] = base64.b64encode(bytes(range(64))).decode()
            red.write({red.meta("head"): json.dumps(head).encode(), f"{prefix}/x": b"x"})

        fleet.refused(made_up, "does not verify")
        fleet.signed_push()

        # A revision signed by a key nobody trusts.
        fleet.refused(
            lambda: plain_push("--sign-key", str(tmp_path / "rogue"), *trust),
            "which this node does not trust",
        )
        fleet.signed_push()

        # The first signed head, its record, manifest and tree written back (a replay).
        fleet.refused(
            lambda: red.write(
                {k: v for k, v in first.items() if "/nodes/" not in k}
                | {f"{prefix}/{p}": v for p, v in first_values.items()},
                deletes=tuple(f"{prefix}/{p}" for p in kv.files(prefix).keys() - first_values),
            ),
            "a replay",
        )
        fleet.signed_push()

        # A value replaced by other bytes, its xxh3 in its Flags; then by another
        # revision's content.
        fleet.refused(lambda: red.write({f"{prefix}/app.conf": b"other bytes\n"}), "another tool")
        fleet.signed_push()
        fleet.refused(lambda: red.write({f"{prefix}/counter": b"signed push 1\n"}), "another tool")
        fleet.signed_push()

        # A signed revision whose value was swapped on its way to Consul for bytes of the same
        # xxh3 (a collision): only the SHA-256 the signature covers tells them apart.
        forged = collide(b"signed, correct!")

        def swapped() -> None:
            holder.write("app.conf", b"signed, correct!")
            with monkeypatch.context() as patch:
                patch.setattr(ConsulClient, "txn", swapping(f"{prefix}/app.conf", forged))
                result = holder.run("push", *sign, "--node", "holder")
            assert result.exit_code == 0, result.output
            assert kv.files(prefix)["app.conf"] == forged

        fleet.refused(swapped, "does not match its signed hash")
        holder.write("app.conf", SHORT)
        fleet.signed_push()

        # For a node that starts from nothing: a manifest that lists a planted file.
        def planted_manifest() -> None:
            head = kv.head(prefix)
            files = {
                p: FileInfo(xxhash.xxh3_64_hexdigest(v), len(v))
                for p, v in kv.files(prefix).items()
            }
            files["evil.sh"] = FileInfo(xxhash.xxh3_64_hexdigest(b"evil"), 4, 0o755)
            value = manifest.encode(files, head["revision"], max_size=1 << 19)
            key = red.meta(f"manifests/{head['revision']:010d}")
            red.write({key: value, f"{prefix}/evil.sh": b"evil"})

        fleet.refused(planted_manifest, "another tool")
        fresh, result = fresh_pull(make_node, "fresh1", trust)
        assert result.exit_code == 11, result.output
        assert "is not the one the signature" in result.output
        assert fresh.files() == {}
        fleet.signed_push()
        assert fresh.run("pull", *trust, "--node", "fresh1").exit_code == 0
        assert fresh.files() == holder.files()

        # For a node that starts from nothing: a record of a push that "died", and the content
        # it "kept" replaced by bytes of the same xxh3: the watcher and the puller need
        # neither (they hold the file), a new node is refused.
        def dead_push() -> None:
            head = kv.head(prefix)
            rev = head["revision"] + 1
            committed = FileInfo(xxhash.xxh3_64_hexdigest(SHORT), len(SHORT), 0o644)
            evil = FileInfo(xxhash.xxh3_64_hexdigest(b"evil"), 4, 0o644)
            journal = Commit(
                rev,
                head["time"],
                "holder",
                "ops",
                "",
                (Change("app.conf", "modified", committed, evil),),
                head["files"],
                head["digest"],
            )
            red.write(
                {
                    red.meta(f"log/{rev:010d}"): journal.encode(max_size=1 << 19),
                    red.meta(f"blobs/{rev:010d}/{committed.hash}"): collide(SHORT),
                    f"{prefix}/app.conf": b"evil",
                }
            )

        before = (watcher.files(), puller.files())
        dead_push()
        fresh, result = fresh_pull(make_node, "fresh2", trust)
        assert result.exit_code == 11, result.output
        assert "does not match its signed hash" in result.output
        assert fresh.files() == {}
        assert fleet.report("fresh2")["result"] == "untrusted"
        assert fleet.pull().exit_code == 0
        assert (watcher.files(), puller.files()) == before
        fleet.signed_push()
        assert fresh.run("pull", *trust, "--node", "fresh2").exit_code == 0
        assert fresh.files() == holder.files()


def test_an_unsigned_tree_without_keys_works_as_before(make_node: Any, kv: KV) -> None:
    holder, watcher, puller, other = (
        make_node(n) for n in ("holder", "watcher", "puller", "other")
    )
    holder.write("app.conf", "v1\n")
    assert holder.run("push").exit_code == 0
    head = kv.head(holder.prefix)
    assert "seal" not in head
    assert "signature" not in head
    assert not any("/sealed/" in k for k in kv.meta(holder.prefix))
    with background(fileconsul_args(watcher, "watch", "--node", "watcher", "--drift-scan", "0")):
        for step, writer in enumerate([holder, other, holder]):
            assert writer.run("pull").exit_code == 0
            writer.write("app.conf", f"v{step + 2}\n")
            assert writer.run("push").exit_code == 0
            expected = f"v{step + 2}\n".encode()
            wait_until(partial(_holds, watcher, "app.conf", expected), what="the watcher")
            result = puller.run("pull")
            assert result.exit_code == 0, result.output
            assert "signed by" not in result.output
            assert puller.read("app.conf") == expected
        # A write by another tool is taken, as it always was.
        KV(kv.url).put(f"{holder.prefix}/motd", b"hi")
        wait_until(lambda: (watcher.root / "motd").exists(), what="the kv put")
        assert puller.run("pull").exit_code == 0
        assert puller.read("motd") == b"hi"
