"""Key files on this machine: a new key pair written (the private key readable by its owner
alone), a private key read for signing, and the public keys a node trusts, from one file or
every `*.pub` file of a directory (removing one revokes it from the next check on)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fileconsul.errors import UsageError
from fileconsul.model.signing import PublicKey, SecretKey

PUBLIC_SUFFIX = ".pub"


def generate(path: Path, comment: str = "") -> SecretKey:
    """A new key pair: the private key in `path` (mode 0600, never overwritten), the public
    key in `path` + ".pub" (one line)."""
    from nacl.signing import SigningKey

    public_path = path.with_name(path.name + PUBLIC_SUFFIX)
    for target in (path, public_path):
        if target.exists():
            raise UsageError(f"{target} exists already; nothing was written (choose another name)")
    key = SecretKey(bytes(SigningKey.generate()), comment)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key.text())
        public_path.write_text(key.public.line() + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the key to {exc.filename} ({exc.strerror})") from exc
    return key


def secret_key(path: Path) -> SecretKey:
    """The private key in `path`; UsageError when it cannot be read, is not one, or others
    than its owner may read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the signing key {path} ({exc.strerror})") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"the signing key {path} may be read by others (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}"
        )
    try:
        return SecretKey.parse(text, path.name)
    except ValueError as exc:
        raise UsageError(f"the signing key {path} is unusable: {exc}") from exc


def trusted_keys(path: Path) -> tuple[PublicKey, ...]:
    """The public keys in a file (one per line; blank lines and # comments skipped), or in
    every `*.pub` file of a directory; UsageError when there is none or one is unreadable."""
    files = sorted(path.glob("*" + PUBLIC_SUFFIX)) if path.is_dir() else [path]
    keys: list[PublicKey] = []
    for file in files:
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the trusted keys {file} ({exc.strerror})") from exc
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                keys.append(PublicKey.parse(line))
            except ValueError as exc:
                raise UsageError(f"{file}, line {number}: {exc}") from exc
    if not keys:
        raise UsageError(f"no public key in {path} (give a .pub file, or a directory of them)")
    return tuple(keys)
