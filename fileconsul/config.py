"""One frozen settings object, built from flags, Consul's standard variables and defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from fileconsul.errors import UsageError
from fileconsul.model.paths import normalize_prefix

DEFAULT_ADDR = "127.0.0.1:8500"
DEFAULT_PREFIX = "fileconsul"
DEFAULT_TIMEOUT = 30.0

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach and authenticate to one Consul agent."""

    base_url: str = f"http://{DEFAULT_ADDR}"
    uds: str | None = None
    token: str | None = field(default=None, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)
    verify: bool = True
    cacert: str | None = None
    capath: str | None = None
    client_cert: tuple[str, str] | None = None
    tls_server_name: str | None = None
    namespace: str | None = None
    dc: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def where(self) -> str:
        """The address as the operator knows it."""
        return f"unix://{self.uds}" if self.uds else self.base_url


@dataclass(frozen=True)
class Settings:
    consul: ConsulSettings
    prefix: str = DEFAULT_PREFIX
    basepath: Path = Path(".")
    warnings: tuple[str, ...] = ()


def _parse_bool(name: str, env: Mapping[str, str], warnings: list[str]) -> bool | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    warnings.append(f"ignoring {name}={raw!r}: not a boolean")
    return None


def _base_url(addr: str, ssl: bool | None) -> tuple[str, str | None]:
    """(base URL, unix socket path or None) for a Consul address in any of its spellings;
    UsageError naming what is wrong with it."""
    if addr.startswith("unix://"):
        path = addr[len("unix://") :]
        if not path.startswith("/"):
            raise UsageError(f"invalid Consul address {addr!r}: write unix:///absolute/path")
        return "http://localhost", path
    scheme = "https" if ssl else "http"
    if "://" in addr:
        given, rest = addr.split("://", 1)
        if given not in ("http", "https"):
            raise UsageError(f"unsupported address scheme {given!r} in {addr!r}")
        scheme = "https" if given == "https" or ssl else "http"
        addr = rest
    addr = addr.rstrip("/")
    if not addr:
        raise UsageError("the Consul address is empty: give --addr HOST:PORT")
    parts = urlsplit(f"{scheme}://{addr}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.path or parts.query:
        raise UsageError(
            f"invalid Consul address {addr!r}: give HOST:PORT, http(s)://HOST:PORT or unix:///path"
        )
    return f"{scheme}://{addr}", None


def _token(flag: str | None, env: Mapping[str, str]) -> str | None:
    # As in Consul's own CLI: a non-empty CONSUL_HTTP_TOKEN_FILE wins over the flag and variable.
    token_file = env.get("CONSUL_HTTP_TOKEN_FILE", "")
    if token_file:
        try:
            from_file = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read CONSUL_HTTP_TOKEN_FILE ({exc.strerror}): fix the path or unset it"
            ) from exc
        if from_file:
            return from_file
    return flag or env.get("CONSUL_HTTP_TOKEN") or None


def _timeout(env: Mapping[str, str]) -> float:
    raw = env.get("FILECONSUL_HTTP_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"FILECONSUL_HTTP_TIMEOUT={raw!r} is not a number of seconds above 0")
    return seconds


def consul_settings(
    *,
    addr: str | None = None,
    token: str | None = None,
    dc: str | None = None,
    env: Mapping[str, str] | None = None,
    warnings: list[str] | None = None,
) -> ConsulSettings:
    env = os.environ if env is None else env
    warnings = [] if warnings is None else warnings
    ssl = _parse_bool("CONSUL_HTTP_SSL", env, warnings)
    verify = _parse_bool("CONSUL_HTTP_SSL_VERIFY", env, warnings)
    base_url, uds = _base_url(addr or env.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDR, ssl)
    auth: tuple[str, str] | None = None
    if env.get("CONSUL_HTTP_AUTH"):
        user, _, password = env["CONSUL_HTTP_AUTH"].partition(":")
        auth = (user, password)
    cert, key = env.get("CONSUL_CLIENT_CERT"), env.get("CONSUL_CLIENT_KEY")
    if bool(cert) != bool(key):
        raise UsageError("set both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY, or neither")
    return ConsulSettings(
        timeout=_timeout(env),
        base_url=base_url,
        uds=uds,
        token=_token(token, env),
        auth=auth,
        verify=verify is not False,
        cacert=env.get("CONSUL_CACERT") or None,
        capath=env.get("CONSUL_CAPATH") or None,
        client_cert=(cert, key) if cert and key else None,
        tls_server_name=env.get("CONSUL_TLS_SERVER_NAME") or None,
        namespace=env.get("CONSUL_NAMESPACE") or None,
        dc=dc or None,
    )


def settings(
    *,
    addr: str | None = None,
    token: str | None = None,
    dc: str | None = None,
    prefix: str | None = None,
    basepath: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from explicit values, else FILECONSUL_* and CONSUL_* variables, else defaults."""
    env = os.environ if env is None else env
    warnings: list[str] = []
    consul = consul_settings(addr=addr, token=token, dc=dc, env=env, warnings=warnings)
    prefix = prefix or env.get("FILECONSUL_PREFIX") or DEFAULT_PREFIX
    basepath = basepath or env.get("FILECONSUL_BASEPATH") or "."
    try:
        clean_prefix = normalize_prefix(prefix)
    except ValueError as exc:
        raise UsageError(f"{exc}: give a prefix like 'fileconsul' or 'team/configs'") from exc
    return Settings(
        consul=consul, prefix=clean_prefix, basepath=Path(basepath), warnings=tuple(warnings)
    )
