"""Ed25519 keys and signatures, through PyNaCl (libsodium): the one-line texts a key file
holds, a key's short fingerprint, signing and verifying bytes.

Pure: it computes over bytes it is given (reading and writing key files, and drawing a new
key's randomness, are `local.keys`'s). PyNaCl is imported when a key is first used, so that a
command on an unsigned tree pays nothing for it.

    fileconsul-ed25519 <32 bytes, base64> [comment]            the public key: one line
    fileconsul-ed25519-private <32-byte seed, base64>          the private key
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field

PUBLIC_TAG = "fileconsul-ed25519"
PRIVATE_TAG = "fileconsul-ed25519-private"
_KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: Hex digits of a fingerprint: a label to find the key by, never what is checked (a
#: signature is verified with the whole key).
FINGERPRINT_DIGITS = 16


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not base64") from exc
    if len(raw) != _KEY_BYTES:
        raise ValueError(f"{what} is {len(raw)} bytes, not {_KEY_BYTES}")
    return raw


def fingerprint_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_DIGITS]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes
    comment: str = field(default="", compare=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.raw)

    def line(self) -> str:
        """The key as its file holds it: one line."""
        text = f"{PUBLIC_TAG} {base64.b64encode(self.raw).decode()}"
        return f"{text} {self.comment}" if self.comment else text

    def verifies(self, message: bytes, signature: bytes) -> bool:
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            VerifyKey(self.raw).verify(message, signature)
        except BadSignatureError:
            return False
        return True

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        """The key on one line; ValueError saying what is wrong with it."""
        parts = text.strip().split(maxsplit=2)
        if len(parts) < 2 or parts[0] != PUBLIC_TAG:
            raise ValueError(f"not a fileconsul public key (a line starting {PUBLIC_TAG!r})")
        return cls(_decode(parts[1], "the key"), parts[2] if len(parts) > 2 else "")


@dataclass(frozen=True)
class SecretKey:
    seed: bytes = field(repr=False)
    comment: str = field(default="", compare=False)

    @property
    def public(self) -> PublicKey:
        from nacl.signing import SigningKey

        return PublicKey(bytes(SigningKey(self.seed).verify_key), self.comment)

    def sign(self, message: bytes) -> bytes:
        from nacl.signing import SigningKey

        return SigningKey(self.seed).sign(message).signature

    def text(self) -> str:
        return f"{PRIVATE_TAG} {base64.b64encode(self.seed).decode()}\n"

    @classmethod
    def parse(cls, text: str, comment: str = "") -> SecretKey:
        parts = text.strip().split()
        if len(parts) != 2 or parts[0] != PRIVATE_TAG:
            raise ValueError(f"not a fileconsul private key (a line starting {PRIVATE_TAG!r})")
        return cls(_decode(parts[1], "the private key"), comment)
