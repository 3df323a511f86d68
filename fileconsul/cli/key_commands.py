"""keygen, and the options that sign a commit and verify one: a signing key for push and
rollback, the trusted keys (and a maximum age) for pull, watch, log and show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from fileconsul.cli.base import cli, common_options
from fileconsul.commands.context import Context
from fileconsul.local import keys
from fileconsul.model.seal import Trust

F = TypeVar("F", bound=Callable[..., Any])

SIGN_KEY = click.option(
    "--sign-key",
    envvar="FILECONSUL_SIGN_KEY",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Sign the commit with this private key (from `fileconsul keygen`); nodes with "
    "--trusted-keys apply only signed commits [env: FILECONSUL_SIGN_KEY].",
)
TRUSTED_KEYS = click.option(
    "--trusted-keys",
    envvar="FILECONSUL_TRUSTED_KEYS",
    type=click.Path(exists=True, path_type=Path),
    metavar="FILE|DIR",
    help="Apply only revisions signed by one of these public keys (a file of them, one a "
    "line, or a directory of *.pub files); anything else is refused, exit 11 "
    "[env: FILECONSUL_TRUSTED_KEYS].",
)
MAX_AGE = click.option(
    "--max-age",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="With --trusted-keys: refuse a signed head older than SECONDS (a frozen tree); a "
    "signed `push --renew` refreshes it [default: any age].",
)


def verifying(func: F) -> F:
    return TRUSTED_KEYS(MAX_AGE(func))


def signed(
    run: Context,
    *,
    sign_key: Path | None = None,
    trusted_keys: Path | None = None,
    max_age: float | None = None,
) -> Context:
    """The command's Context with the key it signs with and the keys it trusts."""
    trust = Trust(keys.trusted_keys(trusted_keys), max_age) if trusted_keys else None
    signer = keys.secret_key(sign_key) if sign_key else None
    return replace(run, trust=trust, signer=signer)


@cli.command()
@common_options
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE")
@click.option(
    "--comment", default="", metavar="TEXT", help="A label kept on the public key's line."
)
def keygen(path: Path, comment: str) -> None:
    """Write a new Ed25519 key pair: the private key to FILE (readable by its owner alone)
    and the public key to FILE.pub, one line.

    Sign with the private key (push --sign-key FILE), and give every node the public key
    (--trusted-keys FILE.pub, or a directory of .pub files) through configuration
    management, not through Consul. Refuses (exit 2) when FILE or FILE.pub exists.

    \b
    Examples:
      fileconsul keygen /etc/fileconsul/release.key --comment release-2025
      fileconsul push --sign-key /etc/fileconsul/release.key -m "signed"
    """
    key = keys.generate(path, comment)
    click.echo(f"Wrote the private key to {path} and the public key to {path}.pub.")
    click.echo(f"Fingerprint: {key.public.fingerprint}")
