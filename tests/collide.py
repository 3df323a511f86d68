"""An xxh3-64 collision for 16-byte values, to show what a cryptographic hash is for: xxh3
is fast and finds changes, but anyone can build other bytes with the same xxh3. For inputs of
9 to 16 bytes XXH3 mixes two 64-bit words with a multiply whose other factor is zero when
the first word equals a constant of its default secret; the second word then sets the sum
directly. (XXH3_len_9to16_64b in the reference xxhash.h.)"""

from __future__ import annotations

import struct

import xxhash

#: Bytes 24 to 56 of XXH3's default secret (kSecret).
_SECRET = bytes.fromhex("7240a4a4b7b3671fcb79e64eccc0e578825ad07dccff7221b8084674f743248e")
_MASK = (1 << 64) - 1


def _words(offset: int) -> int:
    a, b = struct.unpack_from("<QQ", _SECRET, offset)
    return int(a ^ b)


_FLIP_LO, _FLIP_HI = _words(0), _words(16)


def _swap(value: int) -> int:
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def _fold(a: int, b: int) -> int:
    product = a * b
    return (product ^ (product >> 64)) & _MASK


def collide(data: bytes) -> bytes:
    """Other 16 bytes with the same xxh3-64 as `data` (16 bytes)."""
    assert len(data) == 16
    low, high = struct.unpack("<QQ", data)
    low ^= _FLIP_LO
    high ^= _FLIP_HI
    acc = (16 + _swap(low) + high + _fold(low, high)) & _MASK
    forged = struct.pack("<QQ", _FLIP_LO, ((acc - 16) & _MASK) ^ _FLIP_HI)
    assert forged != data
    assert xxhash.xxh3_64_intdigest(forged) == xxhash.xxh3_64_intdigest(data)
    return forged
