from __future__ import annotations

import os

import pytest

from fileconsul.errors import InvalidInput
from fileconsul.fileinfo import FileInfo, content_hash
from fileconsul.manifest import decode, encode

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
    value = encode(files, max_size=LIMIT)
    assert len(value) < LIMIT // 2
    assert decode(value) == files


def test_past_capacity_is_a_clear_error() -> None:
    files = tree_of(2_000)
    with pytest.raises(InvalidInput, match="over Consul's 10000-byte value limit"):
        encode(files, max_size=10_000)


@pytest.mark.parametrize("value", [b"", b"not zlib", b"x\x9c\x03\x00\x00\x00\x00\x01"])
def test_corrupt_values_are_rejected(value: bytes) -> None:
    with pytest.raises(ValueError, match="manifest"):
        decode(value)
