"""The local broker's security modes, without a broker: the session's certificates, the
broker's properties and what a client is told (devkit.security)."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from ruamel.yaml import YAML

from connector.config.models import KafkaSettings
from devkit import security
from devkit.errors import DevBrokerError


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> security.Material:
    return security.material(tmp_path_factory.mktemp("session") / "security")


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(  # raises InvalidSignature otherwise
        cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )  # fmt: skip
    assert cert.issuer == ca.subject


def test_the_broker_certificate_is_the_cas_for_localhost_and_127_0_0_1(
    made: security.Material,
) -> None:
    [ca] = _certificates(made.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    broker, chained_ca = _certificates(made.broker_certificate)
    assert chained_ca == ca  # the chain the broker presents ends at the CA
    _signed_by(broker, ca)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert broker.not_valid_after_utc > datetime.datetime.now(datetime.UTC)


def test_the_client_certificate_is_the_cas_for_client_authentication(
    made: security.Material,
) -> None:
    [ca] = _certificates(made.ca)
    [client] = _certificates(made.client_certificate)
    _signed_by(client, ca)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_keys_are_unencrypted_pkcs8_readable_by_their_owner_only(
    made: security.Material,
) -> None:
    for key in (made.broker_key, made.client_key):
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_folder_started_again_keeps_its_certificates_and_password(
    made: security.Material,
) -> None:
    again = security.material(made.folder)
    assert again == made and made.password
    assert security.material(made.folder.parent / "other").password != made.password


def test_sasl_ssl_secures_the_client_listener_for_scram_and_plain(
    made: security.Material,
) -> None:
    props = security.broker_properties("sasl-ssl", made)
    lines = dict(line.split("=", 1) for line in props.splitlines() if "=" in line)
    assert lines["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,PLAIN"
    prefix = "listener.name.sasl_ssl."
    assert lines[f"{prefix}ssl.keystore.type"] == "PEM"
    assert f'user_kec="{made.password}"' in lines[f"{prefix}plain.sasl.jaas.config"]
    assert "ScramLoginModule" in lines[f"{prefix}scram-sha-512.sasl.jaas.config"]
    # A PEM is one properties line; its newlines are the properties file's \n escapes.
    chain = lines[f"{prefix}ssl.keystore.certificate.chain"].replace("\\n", "\n")
    assert chain + "\n" == made.broker_certificate.read_text()
    assert "ssl.client.auth" not in props
    assert security.format_arguments("sasl-ssl", made) == [
        "--add-scram", f"SCRAM-SHA-512=[name=kec,password={made.password}]",
    ]  # fmt: skip


def test_mtls_requires_a_client_certificate_and_adds_no_user(made: security.Material) -> None:
    props = security.broker_properties("mtls", made)
    assert "listener.name.ssl.ssl.client.auth=required" in props.splitlines()
    assert "sasl" not in props
    assert security.format_arguments("mtls", made) == []
    assert security.broker_properties("plaintext", None) == ""


@pytest.mark.parametrize("mode", security.MODES)
def test_the_printed_kafka_block_is_a_valid_connector_config(
    mode: security.Security, made: security.Material
) -> None:
    properties = security.client_properties(mode, made)
    text = security.kafka_yaml("127.0.0.1:9093", properties)
    settings = KafkaSettings.model_validate(YAML(typ="safe").load(text)["kafka"])
    assert settings.client_config() == {"bootstrap.servers": "127.0.0.1:9093", **properties}


def test_a_password_of_digits_stays_a_string() -> None:
    text = security.kafka_yaml("b:1", {"sasl.password": "123456"})
    assert YAML(typ="safe").load(text)["kafka"]["sasl_password"] == "123456"


def test_an_unknown_mode_is_named() -> None:
    with pytest.raises(DevBrokerError, match="unknown security mode 'sasl'"):
        security.mode("sasl")


def test_dev_broker_offers_the_modes_and_resolve_only_refuses_one() -> None:
    from devkit.commands import dev_broker

    refused = CliRunner().invoke(dev_broker, ["--resolve-only", "--security", "mtls"])
    assert refused.exit_code == 2 and "takes no other option" in refused.output
    unknown = CliRunner().invoke(dev_broker, ["--security", "sasl"])
    assert unknown.exit_code == 2 and "'plaintext', 'sasl-ssl', 'mtls'" in unknown.output
