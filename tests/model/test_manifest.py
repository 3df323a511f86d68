"""The manifest's codec and digest, and what a value may unpack to."""

from __future__ import annotations

import os
import zlib

import pytest

from fileconsul.errors import InvalidInput
from fileconsul.model import manifest
from fileconsul.model.facts import FileInfo, content_hash
from fileconsul.model.manifest import NewerFormat, decode, digest, digest_after, encode, pack

LIMIT = 512 * 1024


def tree_of(count: int) -> dict[str, FileInfo]:
    return {
        f"services/team{i % 17}/app{i % 101}/conf.d/file-{i:06}.json": FileInfo(
            content_hash(os.urandom(16)), 4096 + i, 0o644 if i % 5 else 0o755
        )
        for i in range(count)
    }


def test_ten_thousand_paths_fit_one_value_with_room_to_spare() -> None:
    files = tree_of(10_000)
    value = encode(files, 7, max_size=LIMIT)
    assert len(value) < LIMIT // 2
    assert decode(value, 7) == files


def test_a_manifest_of_another_revision_is_refused() -> None:
    value = encode(tree_of(3), 7, max_size=LIMIT)
    with pytest.raises(ValueError, match="revision 7, not 8"):
        decode(value, 8)


def test_past_capacity_is_a_clear_error() -> None:
    files = tree_of(2_000)
    with pytest.raises(InvalidInput, match="over Consul's 10000-byte value limit"):
        encode(files, 1, max_size=10_000)


@pytest.mark.parametrize("value", [b"", b"not zlib", b"x\x9c\x03\x00\x00\x00\x00\x01"])
def test_corrupt_values_are_rejected(value: bytes) -> None:
    with pytest.raises(ValueError, match="manifest"):
        decode(value, 1)


def test_a_newer_format_is_refused_clearly_not_misread() -> None:
    value = pack({"format": "fileconsul/3", "revision": 1, "paths": []}, "manifest", LIMIT)
    with pytest.raises(NewerFormat, match="written by a newer fileconsul"):
        decode(value, 1)


def test_the_digest_follows_changes_and_tells_trees_apart() -> None:
    before = tree_of(100)
    after = dict(before)
    path = next(iter(after))
    new = FileInfo(content_hash(b"x"), 1, 0o600)
    after[path] = new
    after["added"] = new
    del after[sorted(after)[5]]
    changes = [(p, before.get(p), after.get(p)) for p in set(before) | set(after)]
    assert digest_after(digest(before), changes) == digest(after)
    assert digest(before) != digest(after)
    moved = {**before, path: before[path]._replace(mode=0o700)}
    assert digest(moved) != digest(before)


def test_a_zlib_bomb_is_a_corrupt_value_not_a_gigabyte() -> None:
    deflate = zlib.compressobj(9)
    bomb = deflate.compress(b'{"format": "fileconsul/2", "paths": [')
    bomb += b"".join(deflate.compress(b" " * 1_000_000) for _ in range(100)) + deflate.flush()
    assert len(bomb) < 1_000_000
    with pytest.raises(ValueError, match="decompresses past"):
        manifest.unpack(bomb, "manifest")
    with pytest.raises(ValueError, match="decompresses past"):
        manifest.decode(bomb, 1, files=10)
    assert manifest.unpack_limit(len(bomb)) <= manifest.MAX_UNPACKED
    assert manifest.unpack_limit(len(bomb), rows=10) < 2_000_000


def test_an_honest_manifest_of_long_similar_paths_is_within_its_limit() -> None:
    files = {
        "x" * 4000 + f"{i:06}": FileInfo(content_hash(str(i).encode()), 1) for i in range(1000)
    }
    value = encode(files, 1, max_size=1 << 30)
    assert decode(value, 1, files=len(files)) == files
