"""The Consul HTTP client: KV reads and writes, transactions, sessions, blocking queries.

Every httpx error and every Consul error status is translated here into fileconsul's error
tree, so that callers never see an httpx exception.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote

import httpx
import pybase64

from fileconsul.config import ConsulSettings
from fileconsul.errors import (
    ConflictError,
    ConsulUnavailable,
    FileconsulError,
    InvalidInput,
    PermissionDenied,
    UsageError,
)
from fileconsul.model.paths import unsafe_reason, url_unsafe_reason
from fileconsul.model.tree import KVEntry
from fileconsul.store.ops import Op, encode_txn, kv_get

DEFAULT_MAX_VALUE_SIZE = 512 * 1024


def entry_of(raw: Mapping[str, Any]) -> KVEntry:
    """An entry of Consul's JSON."""
    return KVEntry(
        key=raw["Key"],
        value=_value(raw),
        flags=int(raw.get("Flags") or 0),
        modify_index=int(raw.get("ModifyIndex") or 0),
        session=raw.get("Session") or None,
    )


def _value(raw: Mapping[str, Any]) -> bytes:
    """The bytes of an entry's base64 Value (absent or null for an empty value)."""
    value = raw.get("Value")
    return pybase64.b64decode(value, validate=True) if value else b""


class TxnFailed(ConflictError):
    """A transaction was rolled back; `errors` lists Consul's (OpIndex, What) pairs."""

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.errors = list(errors)


def _ssl_context(settings: ConsulSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.cacert, capath=settings.capath)
    if settings.client_cert:
        context.load_cert_chain(*settings.client_cert)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _message(response: httpx.Response) -> str:
    text = response.text.strip().splitlines()
    return text[0][:200] if text else f"HTTP {response.status_code}"


class ConsulClient:
    """A thin, typed client for the parts of Consul's HTTP API fileconsul uses."""

    def __init__(
        self, settings: ConsulSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.bytes_received = 0
        self.bytes_sent = 0
        self.requests = 0
        # Pushes and pulls keep several transactions in flight from worker threads.
        self._counting = threading.Lock()
        headers = {"X-Consul-Token": settings.token} if settings.token else {}
        if transport is None and settings.uds:
            transport = httpx.HTTPTransport(uds=settings.uds)
        # Plain HTTP never uses it: an empty context spares loading the CA bundle at start-up.
        verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if settings.base_url.startswith("https://"):
            verify = _ssl_context(settings)
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers=headers,
            auth=settings.auth,
            verify=verify,
            transport=transport,
            timeout=settings.timeout,
        )
        self._agent: dict[str, Any] | None = None
        #: Where sessions are made, when not on the agent's own node (another datacenter).
        self._session_node: dict[str, Any] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConsulClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _params(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.settings.dc:
            params["dc"] = self.settings.dc
        if self.settings.namespace:
            params["ns"] = self.settings.namespace
        if extra:
            params.update({k: v for k, v in extra.items() if v is not None})
        return params

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        timeout: float | None = None,
        allow: Sequence[int] = (),
        gzip: bool = True,
    ) -> httpx.Response:
        """Send one request; statuses in `allow` are returned, other failures raised.

        `gzip=False` for responses of file values: they are mostly incompressible, and
        Consul's gzip then costs more time than it saves bytes (bench/README.md).
        """
        extensions = {}
        if self.settings.tls_server_name:
            extensions["sni_hostname"] = self.settings.tls_server_name
        try:
            response = self._http.request(
                method,
                path,
                params=self._params(params),
                content=content,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                extensions=extensions,
                headers=None if gzip else {"Accept-Encoding": "identity"},
            )
        except httpx.TimeoutException as exc:
            raise ConsulUnavailable(
                f"Consul at {self.settings.where} timed out; check the agent and retry"
            ) from exc
        except httpx.TransportError as exc:
            raise ConsulUnavailable(
                f"cannot reach Consul at {self.settings.where} ({exc.__class__.__name__}); "
                "check --addr or CONSUL_HTTP_ADDR and that the agent is running"
            ) from exc
        with self._counting:
            self.requests += 1
            self.bytes_received += response.num_bytes_downloaded
            self.bytes_sent += len(content or b"")
        if response.is_success or response.status_code in allow:
            return response
        raise self._status_error(method, path, response)

    def _status_error(self, method: str, path: str, response: httpx.Response) -> FileconsulError:
        status, text = response.status_code, _message(response)
        what = f"{method} {path.split('?')[0]}"
        if status == 403 or "Permission denied" in text or "ACL not found" in text:
            return PermissionDenied(
                f"Consul's ACLs refused {what} ({text}); use a token with the needed "
                "key permissions (--token, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)"
            )
        if status == 413:
            return InvalidInput(f"Consul refused {what} as too large ({text})")
        if "No path to datacenter" in text:
            return UsageError(
                f"Consul knows no datacenter {self.settings.dc!r} ({text}); check --dc"
            )
        if status >= 500:
            return ConsulUnavailable(f"Consul failed {what} ({status}: {text}); retry later")
        return InvalidInput(f"Consul rejected {what} ({status}: {text})")

    @staticmethod
    def kv_path(key: str, *, folder: bool = False) -> str:
        """The URL path of a key, refusing any key httpx or Consul would rewrite."""
        name = key[:-1] if folder and key.endswith("/") else key
        reason = url_unsafe_reason(name)
        if reason is not None:
            raise InvalidInput(f"refusing to request the unsafe key {key!r}: {reason}")
        return "/v1/kv/" + quote(key, safe="/")

    @staticmethod
    def _index(response: httpx.Response) -> int:
        try:
            return int(response.headers.get("X-Consul-Index", "0"))
        except ValueError:
            return 0

    @staticmethod
    def _blocking(index: int | None, wait: float | None, stale: bool) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if index is not None:
            params["index"] = max(index, 1)
        if wait is not None:
            params["wait"] = f"{int(wait * 1000)}ms"
        if stale:
            params["stale"] = ""
        return params

    def _wait_timeout(self, wait: float | None) -> float | None:
        # Consul adds up to wait/16 of jitter to a blocking query.
        return None if wait is None else self.settings.timeout + wait * 17 / 16

    # -- agent ------------------------------------------------------------------------------

    def agent_self(self) -> dict[str, Any]:
        """`/v1/agent/self`, read once per client; empty when the token lacks agent:read."""
        if self._agent is None:
            response = self.request("GET", "/v1/agent/self", allow=(403,))
            self._agent = {} if response.status_code == 403 else dict(response.json())
        return self._agent

    def max_value_size(self) -> int:
        size = (self.agent_self().get("DebugConfig") or {}).get("KVMaxValueSize")
        return int(size) if size else DEFAULT_MAX_VALUE_SIZE

    def node_name(self, override: str | None = None) -> str:
        """`override`, else the agent's node name (needs agent:read), else this host's name;
        quoted where it could not be a key."""
        if override:
            return override
        config = self.agent_self().get("Config") or {}
        name = str(config.get("NodeName") or socket.gethostname())
        return name if unsafe_reason(name) is None else quote(name, safe="")

    # -- KV ---------------------------------------------------------------------------------

    def get(
        self, key: str, *, index: int | None = None, wait: float | None = None, stale: bool = False
    ) -> tuple[KVEntry | None, int]:
        response = self.request(
            "GET",
            self.kv_path(key),
            params=self._blocking(index, wait, stale),
            timeout=self._wait_timeout(wait),
            allow=(404,),
        )
        if response.status_code == 404:
            return None, self._index(response)
        entries = response.json()
        return entry_of(entries[0]), self._index(response)

    def raw(self, key: str, *, stale: bool = False) -> bytes | None:
        """A value's bytes as they are (`?raw`: no JSON, no base64), None when missing: the
        cheapest read of one value, for both sides."""
        params = {"raw": "", **self._blocking(None, None, stale)}
        response = self.request("GET", self.kv_path(key), params=params, allow=(404,), gzip=False)
        return None if response.status_code == 404 else response.content

    def _listing(self, prefix: str, params: dict[str, Any], wait: float | None) -> tuple[Any, int]:
        """A GET of the folder `prefix`: its JSON (None when empty) and X-Consul-Index."""
        response = self.request(
            "GET",
            self.kv_path(prefix, folder=True),
            params=params,
            timeout=self._wait_timeout(wait),
            allow=(404,),
        )
        body = None if response.status_code == 404 else response.json()
        return body, self._index(response)

    def keys(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: float | None = None,
        stale: bool = False,
        separator: str | None = None,
    ) -> tuple[list[str], int]:
        """Every key under `prefix` (which ends in '/'), names only, and the listing's index;
        with `separator`, only the first level below it."""
        params = {"keys": "", "separator": separator, **self._blocking(index, wait, stale)}
        names, at = self._listing(prefix, params, wait)
        return list(names or []), at

    def recurse(
        self,
        prefix: str,
        *,
        index: int | None = None,
        wait: float | None = None,
        stale: bool = False,
    ) -> tuple[list[KVEntry], int]:
        params = {"recurse": "", **self._blocking(index, wait, stale)}
        entries, at = self._listing(prefix, params, wait)
        return [entry_of(e) for e in entries or []], at

    def put(
        self,
        key: str,
        value: bytes,
        *,
        flags: int = 0,
        cas: int | None = None,
        acquire: str | None = None,
    ) -> bool:
        """PUT a value with an explicit Content-Length; False when a cas or acquire lost."""
        params = {"flags": flags, "cas": cas, "acquire": acquire}
        response = self.request("PUT", self.kv_path(key), params=params, content=value)
        return bool(response.json())

    def delete(self, key: str) -> None:
        """Delete exactly `key` (never a recursive delete: that is a string prefix)."""
        self.request("DELETE", self.kv_path(key))

    def txn(self, ops: Sequence[Op] | bytes, *, stale: bool = False) -> list[dict[str, Any]]:
        """Run one transaction (its operations, or their `encode_txn` body); its results, or
        TxnFailed when Consul rolled it back. `stale` lets any server answer one that only
        reads."""
        body = ops if isinstance(ops, bytes) else encode_txn(ops)
        params = {"stale": ""} if stale else None
        response = self.request(
            "PUT", "/v1/txn", params=params, content=body, allow=(409,), gzip=False
        )
        data = response.json() if response.content else {}
        if response.status_code == 409:
            errors = data.get("Errors") or []
            whats = "; ".join(str(e.get("What")) for e in errors)
            if "Permission denied" in whats:
                raise PermissionDenied(
                    f"Consul's ACLs refused the write ({whats}); use a token with key write "
                    "permission on the prefix"
                )
            raise TxnFailed(f"Consul rolled the transaction back: {whats}", errors)
        return [r["KV"] for r in (data.get("Results") or []) if "KV" in r]

    def txn_entries(self, ops: Sequence[Op], *, stale: bool = False) -> list[KVEntry]:
        return [entry_of(kv) for kv in self.txn(ops, stale=stale)]

    def txn_values(self, ops: Sequence[Op], *, stale: bool = False) -> dict[str, bytes]:
        """The values a transaction of gets read, by key: a pull's bulk read, which needs
        nothing else of each entry."""
        return {kv["Key"]: _value(kv) for kv in self.txn(ops, stale=stale)}

    def values_of(self, keys: Sequence[str], *, stale: bool = False) -> dict[str, bytes]:
        """The values of those of `keys` (at most a transaction's worth) that exist, read
        together: a missing key fails a transaction of gets, so the ones Consul names as
        missing are left out and the rest read again."""
        keys = list(keys)
        while keys:
            try:
                return self.txn_values([kv_get(k) for k in keys], stale=stale)
            except TxnFailed as exc:
                missing = {e.get("OpIndex") for e in exc.errors}
                if not missing or None in missing:
                    raise
                keys = [k for i, k in enumerate(keys) if i not in missing]
        return {}

    # -- sessions ---------------------------------------------------------------------------

    def datacenters(self) -> list[str]:
        """Every datacenter the agent knows of, through WAN federation."""
        return [str(dc) for dc in self.request("GET", "/v1/catalog/datacenters").json()]

    def session_create(self, name: str, *, ttl: int, behavior: str = "delete") -> str:
        """A session that ends with its TTL. In a datacenter other than the agent's (`--dc`),
        the agent's node is not in that datacenter's catalog: the session is made on a node
        of it instead, with no health check, so that its TTL alone ends it."""
        fields = {"Name": name, "TTL": f"{ttl}s", "Behavior": behavior, "LockDelay": "0s"}
        body = json.dumps({**fields, **self._session_node}).encode()
        response = self.request("PUT", "/v1/session/create", content=body, allow=(500,))
        if response.status_code == 500:
            if "Missing node registration" not in response.text or self._session_node:
                raise self._status_error("PUT", "/v1/session/create", response)
            self._session_node = {"Node": self._catalog_node(), "Checks": []}
            return self.session_create(name, ttl=ttl, behavior=behavior)
        session_id: str = response.json()["ID"]
        return session_id

    def _catalog_node(self) -> str:
        nodes = self.request("GET", "/v1/catalog/nodes").json()
        if not nodes:
            raise ConsulUnavailable(
                f"datacenter {self.settings.dc} has no node to hold a session; retry later"
            )
        return str(sorted(n["Node"] for n in nodes)[0])

    def session_renew(self, session_id: str) -> bool:
        """Renew a session; False when it is gone (its TTL ran out, or it was destroyed)."""
        response = self.request("PUT", f"/v1/session/renew/{quote(session_id)}", allow=(404,))
        return response.status_code != 404

    def session_destroy(self, session_id: str) -> None:
        self.request("PUT", f"/v1/session/destroy/{quote(session_id)}")

    @contextmanager
    def session(self, name: str, *, ttl: int) -> Iterator[str]:
        session_id = self.session_create(name, ttl=ttl)
        try:
            yield session_id
        finally:
            # When Consul cannot be told now, the session's TTL ends it.
            with suppress(FileconsulError):
                self.session_destroy(session_id)
