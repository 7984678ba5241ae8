"""Secrets named by their keys (webhook headers, command env, Kafka properties) are never
printed: not in a repr, a dump, ``validate``'s or ``schema``'s output, nor an error; and
they still reach the client that needs them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from connector.commands import config_cmds
from connector.common.redaction import is_secret_name, redact, redact_url, url_secrets
from connector.config import ConfigFileError, load_config
from connector.config.targets import (
    AirflowSpec,
    CommandSpec,
    KafkaSpec,
    PrefectSpec,
    WebhookSpec,
)
from connector.targets import build_target
from kec.errors import ConfigError

HEADER = "Bearer hdr-7c1e-secret"
ENV_TOKEN = "env-tok-55aa"
TARGET_PASSWORD = "target-pw-90b1"
CLIENT_SECRET = "oauth-client-3d3d"
SECRETS = (HEADER, ENV_TOKEN, TARGET_PASSWORD, CLIENT_SECRET)

CONFIG = """\
kafka:
  bootstrap_servers: localhost:9092
  properties:
    ssl.keystore.password: "${CLIENT_SECRET}"
    client.rack: eu-1a
namespaces: {default: {}}
targets:
  engine:
    type: webhook
    url: https://engine.example/actions
    headers: {Authorization: "${HEADER}", X-Trace: visible-trace}
  deploy:
    type: command
    argv: [deploy]
    env: {API_TOKEN: "${ENV_TOKEN}", STAGE: prod}
  actions:
    type: kafka
    topic: actions
    bootstrap_servers: localhost:9092
    properties: {sasl.password: "${TARGET_PASSWORD}", linger.ms: 5}
"""
ENV = {
    "HEADER": HEADER,
    "ENV_TOKEN": ENV_TOKEN,
    "TARGET_PASSWORD": TARGET_PASSWORD,
    "CLIENT_SECRET": CLIENT_SECRET,
}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("X-Api-Key", True),
        ("API_TOKEN", True),
        ("PGPASSWORD", True),
        ("sasl.oauthbearer.client.secret", True),
        ("ssl.keystore.password", True),
        ("ssl.key.pem", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("Cookie", True),
        ("X-Trace", False),
        ("STAGE", False),
        ("compression.type", False),
        ("linger.ms", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def _loaded(tmp_path: Path) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(CONFIG)
    return path


def test_secret_values_are_masked_in_repr_str_and_dumps(tmp_path: Path) -> None:
    cfg = load_config(_loaded(tmp_path), env=ENV)
    shown = [
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        json.dumps(cfg.model_dump(mode="json")),
        *(repr(spec) for spec in cfg.targets.values()),
        repr(cfg.kafka),
    ]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    dumped = cfg.model_dump(mode="json")
    assert dumped["targets"]["engine"]["headers"] == {
        "Authorization": "**********",
        "X-Trace": "visible-trace",  # not a secret: printed as it is
    }
    assert dumped["targets"]["deploy"]["env"] == {"API_TOKEN": "**********", "STAGE": "prod"}
    assert dumped["kafka"]["properties"]["client.rack"] == "eu-1a"


def test_secrets_are_revealed_to_the_clients_only(tmp_path: Path) -> None:
    cfg = load_config(_loaded(tmp_path), env=ENV)
    assert cfg.kafka.client_config()["ssl.keystore.password"] == CLIENT_SECRET
    assert CLIENT_SECRET in cfg.kafka.secrets()
    engine = cfg.targets["engine"]
    assert isinstance(engine, WebhookSpec)
    assert engine.headers["Authorization"] != HEADER  # a SecretStr, compared as one
    assert str(engine.headers["Authorization"]) == "**********"


def test_validate_and_schema_print_no_secret(tmp_path: Path) -> None:
    path = _loaded(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(config_cmds.validate, ["-c", str(path)], env=ENV)
    assert ok.exit_code == 0, ok.output
    # The same file with an error beside each secret: the errors quote no value.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        CONFIG.replace("X-Trace: visible-trace", "X-Trace: 7")
        .replace("STAGE: prod", "STAGE: [prod]")
        .replace("linger.ms: 5", "linger.ms: [5]")
    )
    failed = runner.invoke(config_cmds.validate, ["-c", str(broken)], env=ENV)
    assert failed.exit_code == 2
    assert 'targets.engine.headers["X-Trace"]: input should be a valid string' in failed.output
    assert "targets.deploy.env.STAGE" in failed.output
    schema = runner.invoke(config_cmds.schema, [], env=ENV)
    assert schema.exit_code == 0
    for output in (ok.output, failed.output, schema.output):
        for secret in SECRETS:
            assert secret not in output


def test_build_errors_quote_no_secret() -> None:
    spec = {
        "type": "webhook",
        "url": "ftp://engine.example/actions",  # refused when the target is built
        "headers": {"Authorization": HEADER},
    }
    with pytest.raises(ConfigError) as info:
        build_target("engine", spec)
    assert "http(s)" in str(info.value)
    assert HEADER not in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_target("engine", {**spec, "url": "https://x", "headers": {"Authorization": 1}})
    assert HEADER not in str(info.value)


def test_a_loader_error_quotes_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            kafka: {bootstrap_servers: localhost:9092}
            namespaces: {default: {}}
            targets:
              engine: {type: webhook, url: "${HEADER}", headers: {Authorization: "${HEADER}"},
                       timeout: -1}
            """
        )
    )
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env=ENV)
    assert "timeout" in str(info.value)
    assert HEADER not in str(info.value)


def test_spec_values_keep_their_types() -> None:
    kafka = KafkaSpec.model_validate(
        {
            "type": "kafka",
            "topic": "t",
            "bootstrap_servers": "b",
            "properties": {"linger.ms": 5, "ssl.key.password": "pw", "enable.x": True},
        }
    )
    assert kafka.properties["linger.ms"] == 5
    assert kafka.properties["enable.x"] is True
    command = CommandSpec.model_validate(
        {"type": "command", "argv": ["x"], "env": {"A": "1"}, "inherit_env": ["AWS_*"]}
    )
    assert command.env == {"A": "1"}
    assert command.inherit_env == ["AWS_*"]


def test_redact_replaces_every_secret() -> None:
    text = "Invalid value 'pw-long' for sasl.password; also pw"
    assert redact(text, ["pw-long", "pw", ""]) == (
        "Invalid value '**********' for sasl.password; also **********"
    )


def test_a_target_spec_repr_shows_no_url_secret() -> None:
    hook = "https://hooks.example.com/services/T000/B000/XXXXSECRET?sig=SIGSECRET"
    specs = [
        WebhookSpec.model_validate({"type": "webhook", "url": hook}),
        AirflowSpec.model_validate({"type": "airflow", "url": hook}),
        PrefectSpec.model_validate({"type": "prefect", "url": hook}),
    ]
    for spec in specs:
        assert "XXXXSECRET" not in repr(spec) and "SIGSECRET" not in repr(spec)
        assert "url='https://hooks.example.com/…?sig=…'" in repr(spec)
        assert "XXXXSECRET" in spec.url  # the target itself gets the whole URL


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # A hosted webhook: the secret is the path.
        ("https://hooks.example.com/services/T000/B000/XXXXSECRET", "https://hooks.example.com/…"),
        (
            "http://kec:pa55word@engine.example:8080/actions?token=t0k3n&mode=fast",
            "http://engine.example:8080/…?token=…&mode=…",
        ),
        ("https://engine.example/hook?SECRETALONE", "https://engine.example/…?…"),
        ("https://APITOKEN@engine.example", "https://engine.example"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
        ("http://airflow:8080", "http://airflow:8080"),
        ("https://engine.example/#frag-secret", "https://engine.example"),
        ("ftp://user@files.example/pub/secret", "ftp://files.example/…"),
        ("/services/T000/B000/XXXXSECRET", "/…"),  # a relative Location header
        ("hooks.example.com/services/XXXXSECRET", "…"),  # no scheme: all of it is path
        ("mailto:someone@example.com", "mailto:…"),
        ("http://[::1/unclosed", "(unreadable URL)"),
        ("", "…"),
    ],
)
def test_redact_url_shows_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_takes_any_url_object() -> None:
    assert redact_url(httpx.URL("https://u:p@h.example:4443/api/XXXX?k=v")) == (
        "https://h.example:4443/…?k=…"
    )


def test_url_secrets_star_what_a_quoted_text_echoes_of_the_url() -> None:
    url = "https://hookuser:pw@hooks.example.com/services/T000/B000/XXXXSECRET?sig=SIG%2BSECRET&v=1"
    secrets = url_secrets(url)
    echoed = (
        "POST /services/T000/B000/XXXXSECRET?sig=SIG%2BSECRET refused: bad token XXXXSECRET,"
        " signature SIG+SECRET, user hookuser (password pw); see /services for help, api v=1"
    )
    text = redact(echoed, secrets)
    for secret in ("XXXXSECRET", "SIG%2BSECRET", "SIG+SECRET", "hookuser", "pw)"):
        assert secret not in text
    # Words and short values are left readable: they are not what a secret looks like.
    assert "see /services for help, api v=1" in text
    assert url_secrets("http://[::1/unclosed") == []
    assert url_secrets("https://engine.example/") == []
