"""The YAML config loader: every broken fixture's errors located exactly, ``${...}``
interpolation, secrets kept out of output, paths resolved against the file.

The fixtures in ``configs/`` hold only YAML; what each must report is in
:data:`EXPECTED` below, line numbers read off the fixture.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.config import ConfigFileError, ConnectorConfig, load_config
from connector.config.targets import CommandSpec, LogSpec
from connector.rules import AllOf, JsonPredicate, Rule, ValueMatch
from kec.action import ActionKind

CONFIGS = Path(__file__).parent / "configs"
SECRET = "hunter2-s3cr3t"
# Explicit, so a variable set in the developer's shell cannot change the outcome.
ENV = {"KAFKA_PASSWORD": SECRET, "PG_DSN": f"mysql://connector:{SECRET}@db/connector"}

# fixture -> every error it must report, in the order reported (by line, then path, but
# an unknown key ahead of the other errors of its mapping): (line, path, message fragment).
EXPECTED: dict[str, list[tuple[int, str, str]]] = {
    "missing_bootstrap.yaml": [(2, "kafka.bootstrap_servers", "field required")],
    "rule_without_action.yaml": [(6, "rules[0].action", "field required")],
    "task_rule_without_task.yaml": [(10, "rules[1].task", "task action `START` needs a task")],
    "wrong_types.yaml": [
        (5, "namespaces.orders.topics", "input should be a valid list"),
        (7, "pipeline.batch_size", "input should be a valid integer"),
        (9, "http.port", "greater than or equal to 0"),
    ],
    "unknown_top_level_key.yaml": [
        (3, "namepsaces", "unknown key `namepsaces`: did you mean `namespaces`?"),
        (1, "namespaces", "field required"),
    ],
    "unknown_key_in_rule.yaml": [
        (9, "rules[0].workfow", "unknown key `workfow`: did you mean `workflow`?"),
        (6, "rules[0].workflow", "action `start` needs a workflow"),
    ],
    "unknown_key_in_target.yaml": [
        (9, "targets.deploy.timout", "unknown key `timout`: did you mean `timeout`?"),
    ],
    "typo_before_its_knock_on.yaml": [
        (10, "rules[0].taks", "unknown key `taks`: did you mean `task`?"),
        (5, "rules[0].task", "task action `RESTART` needs a task"),
        (12, "rules[0].value.json[0].eqals", "unknown key `eqals`: did you mean `equals`?"),
        (14, "topic_creation.enable", "unknown key `enable`: did you mean `enabled`?"),
        (15, "metrics.bogus", "unknown key `bogus` (known keys: host, port)"),
    ],
    "bad_yaml_tab.yaml": [(2, "(yaml)", "found character '\\t' that cannot start any token")],
    "bad_yaml_indent.yaml": [(3, "(yaml)", "expected <block end>")],
    "bad_yaml_bracket.yaml": [(4, "(yaml)", "expected ',' or ']', but got '}'")],
    "undefined_env.yaml": [
        (2, "kafka.bootstrap_servers", "environment variable NOPE is not set (and has no default)")
    ],
    "unknown_target.yaml": [
        (12, "rules[0].target", "unknown target 'nowhere' (declared: deploy, log)"),
    ],
    "unknown_namespace.yaml": [(7, "rules[0].namespace", "unknown namespace 'shop'")],
    # http: declares its namespace: listing it again is an error, a rule naming it is not.
    "http_namespace_listed.yaml": [
        (5, "namespaces.http", "namespace 'http' is the HTTP gateway's (http.namespace)"),
    ],
    "http_topic_clash.yaml": [
        (6, "http.topic", "topic 'events.default' already belongs to namespace 'default'"),
    ],
    "duplicate_rule_names.yaml": [
        (6, "rules[0].name", "rule name 'same' is used more than once"),
        (12, "rules[2].name", "rule name 'same' is used more than once"),
    ],
    "topic_in_two_namespaces.yaml": [
        (9, "namespaces.billing.topics[1]", "topic 'orders' already belongs to namespace 'orders'"),
    ],
    # The implied topic of `default` (events.default) has no index in the file.
    "implied_topic_clash.yaml": [
        (6, "namespaces.default", "topic 'events.default' already belongs to namespace 'legacy'"),
    ],
    "several_errors.yaml": [
        (3, "kafka.bootstrap_servers", "environment variable NOPE is not set"),
        (4, "kafka.sasl_mechanism", "input should be 'PLAIN'"),
        (9, "pipeline.lingr_ms", "unknown key `lingr_ms`: did you mean `linger_ms`?"),
        (8, "pipeline.batch_size", "input should be greater than 0"),
        (13, "rules[0].action", "input should be 'start', 'stop'"),
        (18, "rules[1].target", "unknown target 'nowhere' (declared: log)"),
    ],
    "empty.yaml": [(1, "(top level)", "the file is empty")],
    "top_level_list.yaml": [(1, "(top level)", "must be a mapping of sections")],
    "bad_regex.yaml": [
        (9, "rules[0].value.regex", "invalid regular expression '([a-z': unterminated"),
    ],
    "secret_with_error.yaml": [
        (6, "kafka.sasl_mechanism", "input should be 'PLAIN'"),
        (11, "checkpoint.dsn", "must be a postgresql:// URL"),
    ],
    "duplicate_key.yaml": [(4, "(yaml)", 'found duplicate key "sasl_password"')],
    # Keys merged with `<<: *anchor` have no line of their own: the item's line.
    "merged_rule_keys.yaml": [
        (13, "rules[1].task", "action `notify` takes no task"),
        (13, "rules[1].workflow", "action `notify` takes no workflow"),
    ],
}

# fixture -> text that must not appear anywhere in its errors.
SECRETS: dict[str, list[str]] = {
    "secret_with_error.yaml": [SECRET],
    "duplicate_key.yaml": ["first-s3cr3t", "second-s3cr3t"],
}


def errors_of(path: Path, env: dict[str, str] | None = None) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env=ENV if env is None else env)
    return info.value


def write(tmp_path: Path, text: str, name: str = "connector.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BASE = "kafka: {bootstrap_servers: localhost:9092}\nnamespaces: {default: {}}\n"


# -- the broken fixtures ---------------------------------------------------------------


def test_every_fixture_has_expectations() -> None:
    fixtures = {p.name for p in CONFIGS.glob("*.yaml")}
    valid = {"valid_minimal.yaml", "valid_full.yaml", "build_refuses_target.yaml"}
    assert fixtures - valid == set(EXPECTED)


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_broken_fixture_reports_each_error_at_its_line(fixture: str) -> None:
    path = CONFIGS / fixture
    error = errors_of(path)
    expected = EXPECTED[fixture]
    assert error.file == str(path)
    assert len(error.errors) == len(expected), error.errors
    for line, (number, where, fragment) in zip(error.errors, expected, strict=True):
        prefix = f"{path}:{number} {where}: "
        assert line.startswith(prefix), (line, prefix)
        assert fragment in line.removeprefix(prefix), (line, fragment)
    # The exception's message lists every error, under a count.
    message = str(error)
    count = len(expected)
    assert message.splitlines()[0] == f"{path}: {count} error{'s' if count != 1 else ''}"
    assert message.splitlines()[1:] == [f"  {line}" for line in error.errors]


@pytest.mark.parametrize("fixture", sorted(SECRETS))
def test_secrets_stay_out_of_errors(fixture: str) -> None:
    error = errors_of(CONFIGS / fixture)
    for secret in SECRETS[fixture]:
        assert secret not in str(error)
        assert not any(secret in line for line in error.errors)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    error = errors_of(missing)
    assert error.errors[0].startswith(f"{missing}: cannot read: ")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"kafka: \xff\xfe\n")
    assert errors_of(binary).errors[0].startswith(f"{binary}: cannot read: ")


def test_malformed_reference(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "group_id: ${1BAD}\ndead_letter_topic: ${OPEN\n")
    advice = "(use ${NAME}, ${env:NAME}, ${NAME:-default} or ${file:PATH})"
    assert errors_of(path).errors == [
        f"{path}:3 group_id: malformed ${{...}} reference {advice}",
        f"{path}:4 dead_letter_topic: malformed ${{...}} reference {advice}",
    ]


def test_env_and_file_references(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("s3cr3t-from-a-file\n")
    path = write(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: localhost:9092\n"
        "  sasl_username: ${env:KEC_TEST_USER}\n"
        "  sasl_password: ${file:secrets/password}\n"
        "namespaces: {default: {}}\n",
    )
    cfg = load_config(path, env={"KEC_TEST_USER": "alice"})
    assert cfg.kafka.sasl_username == "alice"
    assert cfg.kafka.client_config()["sasl.password"] == "s3cr3t-from-a-file"  # no line end
    assert "s3cr3t-from-a-file" in cfg.file_secrets
    assert "s3cr3t-from-a-file" in cfg.secrets()
    assert "s3cr3t" not in repr(cfg)


def test_a_file_reference_that_cannot_be_read_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "group_id: ${file:missing.txt}\n")
    (error,) = errors_of(path).errors
    assert error.startswith(f"{path}:3 group_id: ${{file:...}}: cannot read ")
    assert "missing.txt" in error


def test_model_checks_across_sections_without_the_loader() -> None:
    # Validating plain data (no file) runs the same cross-section checks.
    data = {
        "kafka": {"bootstrap_servers": "k:9092"},
        "namespaces": {"default": {}},
        "rules": [{"name": "r", "key": "k", "action": "notify", "target": "nowhere"}],
    }
    with pytest.raises(ValueError, match=r"rules\[0\]\.target: unknown target 'nowhere'"):
        ConnectorConfig.model_validate(data)


# -- valid files -----------------------------------------------------------------------


def test_minimal_file_defaults() -> None:
    cfg = load_config(CONFIGS / "valid_minimal.yaml", env={})
    assert cfg.kafka.bootstrap_servers == "localhost:9092"
    assert cfg.group_id == "event-connector"
    assert cfg.topics() == {"events.default": "default"}
    assert cfg.targets == {"log": LogSpec(type="log")}
    assert cfg.rules == []
    assert (cfg.http, cfg.metrics, cfg.dead_letter_topic) == (None, None, None)
    assert cfg.checkpoint.path == CONFIGS.resolve() / "checkpoints.db"


def test_full_file() -> None:
    cfg = load_config(CONFIGS / "valid_full.yaml", env={})
    assert cfg.kafka.client_config() == {
        "bootstrap.servers": "localhost:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "connector",
        "sasl.password": "changeme",
        "client.rack": "eu-west-1a",
    }
    assert (cfg.group_id, cfg.topic_prefix, cfg.dead_letter_topic) == (
        "shop-connector",
        "shop.",
        "shop-dlq",
    )
    assert cfg.pipeline.batch_size == 500
    assert cfg.pipeline.instance_id == "connector-1"
    assert cfg.retry.policy().max_attempts == 3
    assert cfg.targets == {
        "log": LogSpec(type="log"),
        "deploy": CommandSpec(type="command", argv=["echo", "deploy"], timeout=5),
    }
    assert cfg.http is not None
    assert (cfg.http.port, cfg.http.strict) == (8080, True)
    assert cfg.http.token is not None
    assert cfg.http.token.get_secret_value() == "dev-token"  # the default: GATEWAY_TOKEN unset
    assert cfg.metrics is not None
    assert (cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1", 9465)


def test_rules_from_yaml_equal_rules_built_in_python() -> None:
    cfg = load_config(CONFIGS / "valid_full.yaml", env={})
    assert cfg.rules == [
        Rule(
            name="start-wf",
            key="start",
            action=ActionKind.START_WORKFLOW,
            workflow="workflow_1",
            target="deploy",
        ),
        Rule(
            name="restart-load",
            namespace="orders",
            key="order-*",
            value=ValueMatch(
                regex="^ok", json_=(JsonPredicate(path="status", in_=("ok", "done")),)
            ),
            action=ActionKind.RESTART_TASK,
            workflow="etl",
            task="load",
        ),
        Rule(
            name="wait-both",
            all_of=AllOf(keys=("extract-done", "load-done"), window=600, policy="latest"),
            action=ActionKind.STOP_WORKFLOW,
            workflow="etl",
        ),
        Rule(name="tell", namespace="orders", key="refund", action=ActionKind.NOTIFY),
    ]


def test_namespace_without_topics_reads_prefix_and_name() -> None:
    cfg = load_config(CONFIGS / "valid_full.yaml", env={})
    assert cfg.namespaces["default"].topics is None
    assert cfg.namespaces["default"].topics_of("default", cfg.topic_prefix) == ["shop.default"]
    assert cfg.namespaces["orders"].topics_of("orders", cfg.topic_prefix) == ["orders", "returns"]
    # The pipeline reads the gateway's topic too (http: section), in its own namespace.
    assert cfg.topics() == {
        "shop.default": "default",
        "orders": "orders",
        "returns": "orders",
        "http-events": "http",
    }


# -- interpolation ---------------------------------------------------------------------


def test_variable_and_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka: {bootstrap_servers: '${HOST}:${PORT:-9092}'}\n"
        "namespaces: {default: {}}\n"
        "group_id: ${GROUP:-fallback}\n"
        "dead_letter_topic: ${DLQ:-dlq}\n",
    )
    cfg = load_config(path, env={"HOST": "kafka-1", "DLQ": "dead"})
    assert cfg.kafka.bootstrap_servers == "kafka-1:9092"
    assert cfg.group_id == "fallback"  # unset: the default
    assert cfg.dead_letter_topic == "dead"  # set: the value, not the default


def test_default_when_empty(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "group_id: ${GROUP:-fallback}\ntopic_prefix: ${PREFIX}\n")
    cfg = load_config(path, env={"GROUP": "", "PREFIX": ""})
    assert cfg.group_id == "fallback"
    # Set but empty, without default: the empty string, not an "is not set" error.
    assert cfg.topic_prefix == ""
    assert cfg.topics() == {"default": "default"}


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "group_id: cost$$5-$${HOME}\n")
    assert load_config(path, env={"HOME": "/root"}).group_id == "cost$5-${HOME}"


def test_a_lone_dollar_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "group_id: price$5\n")
    assert load_config(path, env={}).group_id == "price$5"


def test_keys_and_non_strings_are_not_interpolated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka: {bootstrap_servers: k:9092}\nnamespaces: {'${NS}': {}}\nmetrics: {port: 9000}\n",
    )
    cfg = load_config(path, env={"NS": "expanded"})
    assert list(cfg.namespaces) == ["${NS}"]
    assert cfg.metrics is not None
    assert cfg.metrics.port == 9000


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE + "group_id: ${KEC_TEST_GROUP}\n")
    monkeypatch.setenv("KEC_TEST_GROUP", "from-os")
    assert load_config(path).group_id == "from-os"
    # An explicit env is the only source: os.environ is not consulted.
    assert load_config(path, env={"KEC_TEST_GROUP": "explicit"}).group_id == "explicit"
    error = errors_of(path, env={})
    assert error.errors == [
        f"{path}:3 group_id: environment variable KEC_TEST_GROUP is not set (and has no "
        "default); string should have at least 1 character"
    ]


# -- secrets ---------------------------------------------------------------------------


SECRETS_FILE = """\
kafka:
  bootstrap_servers: localhost:9092
  sasl_password: ${KAFKA_PASSWORD}
  ssl_key_password: ${KEY_PASSWORD}
  properties: {compression.type: zstd}
namespaces: {default: {}}
http: {token: "${TOKEN}"}
"""


def test_secrets_are_masked_in_repr_str_and_json(tmp_path: Path) -> None:
    env = {"KAFKA_PASSWORD": SECRET, "KEY_PASSWORD": "key-pa55", "TOKEN": "tok-3n"}
    cfg = load_config(write(tmp_path, SECRETS_FILE), env=env)
    shown = [
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        repr(cfg.kafka),
        str(cfg.model_dump()),
        repr(cfg.http),
    ]
    for text in shown:
        for secret in env.values():
            assert secret not in text
    assert "**********" in cfg.model_dump_json()


def test_client_config_is_where_secrets_are_revealed(tmp_path: Path) -> None:
    env = {"KAFKA_PASSWORD": SECRET, "KEY_PASSWORD": "key-pa55", "TOKEN": "tok-3n"}
    cfg = load_config(write(tmp_path, SECRETS_FILE), env=env)
    assert cfg.kafka.client_config() == {
        "bootstrap.servers": "localhost:9092",
        "sasl.password": SECRET,
        "ssl.key.password": "key-pa55",
        "compression.type": "zstd",
    }
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == SECRET


def test_typed_oidc_and_hostname_settings_reach_the_client(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text("oidc-s3cr3t\n")
    path = write(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: broker:9093\n"
        "  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: OAUTHBEARER\n"
        "  sasl_oauthbearer_method: oidc\n"
        "  sasl_oauthbearer_client_id: connector\n"
        "  sasl_oauthbearer_client_secret: ${file:client-secret}\n"
        "  sasl_oauthbearer_token_endpoint_url: https://idp.example/token\n"
        "  ssl_endpoint_identification: false\n"
        "namespaces: {default: {}}\n",
    )
    cfg = load_config(path)
    assert cfg.kafka.client_config() == {
        "bootstrap.servers": "broker:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": "connector",
        "sasl.oauthbearer.client.secret": "oidc-s3cr3t",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
        "ssl.endpoint.identification.algorithm": "none",
    }
    assert "oidc-s3cr3t" not in repr(cfg) and "oidc-s3cr3t" in cfg.kafka.secrets()


def test_oidc_needs_its_client_credentials(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: broker:9093\n"
        "  sasl_mechanism: OAUTHBEARER\n"
        "  sasl_oauthbearer_method: oidc\n"
        "namespaces: {default: {}}\n",
    )
    (error,) = errors_of(path).errors
    assert "sasl_oauthbearer_method oidc needs sasl_oauthbearer_client_id" in error
    assert error.startswith(f"{path}:1 kafka")


def test_a_kafka_target_without_servers_uses_the_connectors_cluster(tmp_path: Path) -> None:
    from connector.assembly import build_targets

    path = write(
        tmp_path,
        "kafka:\n"
        "  bootstrap_servers: broker:9093\n"
        "  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: connector\n"
        "  sasl_password: pw-123456\n"
        "namespaces: {default: {}}\n"
        "targets:\n"
        "  same: {type: kafka, topic: actions, properties: {compression.type: zstd}}\n"
        "  other: {type: kafka, topic: actions, bootstrap_servers: elsewhere:9092}\n",
    )
    cfg = load_config(path)
    targets = build_targets(cfg.targets, cfg.kafka.connection())
    same, other = targets["same"], targets["other"]
    assert same._conf["bootstrap.servers"] == "broker:9093"  # type: ignore[attr-defined]
    assert same._conf["sasl.password"] == "pw-123456"  # type: ignore[attr-defined]
    assert same._conf["compression.type"] == "zstd"  # type: ignore[attr-defined]
    assert other._conf["bootstrap.servers"] == "elsewhere:9092"  # type: ignore[attr-defined]
    assert "sasl.password" not in other._conf  # type: ignore[attr-defined]


def test_postgres_dsn_is_revealed_by_url_only(tmp_path: Path) -> None:
    dsn = f"postgresql://connector:{SECRET}@db:5432/connector"
    path = write(tmp_path, BASE + "checkpoint: {backend: postgres, dsn: '${PG_DSN}'}\n")
    cfg = load_config(path, env={"PG_DSN": dsn})
    assert cfg.checkpoint.url() == dsn
    assert SECRET not in repr(cfg.checkpoint)
    assert SECRET not in cfg.model_dump_json()


# -- paths -----------------------------------------------------------------------------


def test_relative_sqlite_path_is_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, BASE + "checkpoint: {path: state/cp.db}\n", name="conf/connector.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../conf/connector.yaml", env={})  # a relative file name, too
    expected = (tmp_path / "conf").resolve() / "state" / "cp.db"
    assert cfg.checkpoint.path == expected
    assert cfg.checkpoint.url() == f"sqlite://{expected}"
    assert cfg.checkpoint.url().startswith("sqlite:///")


def test_relative_target_paths_are_relative_to_the_file_too(tmp_path: Path) -> None:
    targets = (
        "targets:\n"
        "  audit: {type: log, path: out/actions.jsonl}\n"
        '  deploy: {type: command, argv: ["true"], cwd: work}\n'
        "  stdout: {type: log}\n"
    )
    path = write(tmp_path, BASE + targets, name="conf/connector.yaml")
    cfg = load_config(path, env={})
    base = (tmp_path / "conf").resolve()
    audit, deploy, stdout = cfg.targets["audit"], cfg.targets["deploy"], cfg.targets["stdout"]
    assert isinstance(audit, LogSpec) and audit.path == base / "out" / "actions.jsonl"
    assert isinstance(deploy, CommandSpec) and deploy.cwd == base / "work"
    assert isinstance(stdout, LogSpec) and stdout.path is None


def test_absolute_sqlite_path_is_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs" / "cp.db"
    path = write(tmp_path, BASE + f"checkpoint: {{path: '{absolute}'}}\n", name="c/c.yaml")
    assert load_config(path, env={}).checkpoint.path == absolute


def test_the_documented_example_file_loads(tmp_path: Path) -> None:
    """connector/config/__init__.py shows every section; that text must stay a valid file."""
    import connector.config

    doc = connector.config.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n\n", 1)[1].split("\n\n", 1)[0])
    path = tmp_path / "example.yaml"
    path.write_text(example)
    env = {"KAFKA_PASSWORD": "pw", "GATEWAY_TOKEN": "tok", "ADMIN_TOKEN": "adm"}
    config = load_config(path, env=env)
    assert config.topics() == {
        "events.default": "default",
        "orders": "orders",
        "returns": "orders",
        "http-events": "http",
    }
    assert config.listener_group() == "ray-listeners"
    assert config.checkpoint.retention_days == 14
    assert config.http is not None and config.http.token is not None
    assert config.http.token.get_secret_value() == "tok"
