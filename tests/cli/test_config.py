from __future__ import annotations

from pathlib import Path

import pytest

from fileconsul.config import consul_settings, settings
from fileconsul.errors import UsageError
from fileconsul.model.paths import normalize_prefix, unsafe_reason


@pytest.mark.parametrize(
    ("addr", "env", "url", "uds"),
    [
        (None, {}, "http://127.0.0.1:8500", None),
        (None, {"CONSUL_HTTP_ADDR": "10.0.0.1:8500"}, "http://10.0.0.1:8500", None),
        ("127.0.0.2:9000", {"CONSUL_HTTP_ADDR": "x:1"}, "http://127.0.0.2:9000", None),
        ("https://consul:8501", {}, "https://consul:8501", None),
        ("consul:8501", {"CONSUL_HTTP_SSL": "true"}, "https://consul:8501", None),
        ("http://consul:8501", {"CONSUL_HTTP_SSL": "1"}, "https://consul:8501", None),
        ("unix:///run/consul.sock", {}, "http://localhost", "/run/consul.sock"),
    ],
)
def test_address_spellings(
    addr: str | None, env: dict[str, str], url: str, uds: str | None
) -> None:
    result = consul_settings(addr=addr, env=env)
    assert result.base_url == url
    assert result.uds == uds


def test_token_file_wins_over_flag_and_variable(tmp_path: Path) -> None:
    token_file = tmp_path / "t"
    token_file.write_text("  from-file\n")
    env = {"CONSUL_HTTP_TOKEN": "from-env", "CONSUL_HTTP_TOKEN_FILE": str(token_file)}
    assert consul_settings(token="from-flag", env=env).token == "from-file"
    assert consul_settings(token="from-flag", env={"CONSUL_HTTP_TOKEN": "e"}).token == "from-flag"
    assert consul_settings(env={"CONSUL_HTTP_TOKEN": "from-env"}).token == "from-env"
    token_file.write_text("")
    assert consul_settings(env=env).token == "from-env"


def test_a_missing_token_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CONSUL_HTTP_TOKEN_FILE"):
        consul_settings(env={"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "none")})


def test_token_never_shows_in_the_settings_repr() -> None:
    result = consul_settings(env={"CONSUL_HTTP_TOKEN": "s3cr3t", "CONSUL_HTTP_AUTH": "u:pw"})
    assert "s3cr3t" not in repr(result)
    assert "pw" not in repr(result)
    assert result.auth == ("u", "pw")


def test_tls_variables() -> None:
    env = {
        "CONSUL_HTTP_SSL_VERIFY": "false",
        "CONSUL_CACERT": "/ca.pem",
        "CONSUL_CAPATH": "/cas",
        "CONSUL_CLIENT_CERT": "/c.pem",
        "CONSUL_CLIENT_KEY": "/k.pem",
        "CONSUL_TLS_SERVER_NAME": "consul.internal",
        "CONSUL_NAMESPACE": "team",
    }
    result = consul_settings(env=env)
    assert result.verify is False
    assert (result.cacert, result.capath) == ("/ca.pem", "/cas")
    assert result.client_cert == ("/c.pem", "/k.pem")
    assert result.tls_server_name == "consul.internal"
    assert result.namespace == "team"
    with pytest.raises(UsageError, match="both"):
        consul_settings(env={"CONSUL_CLIENT_CERT": "/c.pem"})


def test_an_invalid_boolean_is_ignored_with_a_warning() -> None:
    result = settings(env={"CONSUL_HTTP_SSL_VERIFY": "maybe"})
    assert result.consul.verify is True
    assert result.warnings == ("ignoring CONSUL_HTTP_SSL_VERIFY='maybe': not a boolean",)


def test_prefix_is_normalized_and_checked() -> None:
    assert normalize_prefix("team/configs/") == "team/configs"
    for bad in ("", "/abs", "a/../b", "a//b", "back\\slash"):
        with pytest.raises(ValueError, match="invalid prefix"):
            normalize_prefix(bad)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("ok/file.txt", None),
        ("..", "'..' segment"),
        ("a/./b", "'.' segment"),
        ("a//b", "'//' segment"),
        ("/abs", "leading '/'"),
        ("dir/", "folder key (ends in '/')"),
        ("a\\b", "backslash in name"),
        ("a\x00b", "control character in name"),
        ("a\x7fb", "control character in name"),
        ("x" * 256, "segment longer than 255 bytes"),
        ("bad\udcff", "name is not valid UTF-8"),
    ],
)
def test_unsafe_reason(path: str, reason: str | None) -> None:
    assert unsafe_reason(path) == reason
