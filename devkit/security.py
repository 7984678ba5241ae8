"""The local broker's security modes: what production clusters require, rehearsed locally.

:class:`~devkit.broker.DevBroker` runs in one of :data:`MODES`:

* ``plaintext`` — no encryption, no authentication (the default);
* ``sasl-ssl`` — SASL over TLS, SCRAM-SHA-512 and PLAIN on the same listener, one user
  known to both mechanisms (SCRAM credentials are written when the storage is formatted,
  PLAIN users live in the listener's JAAS configuration);
* ``mtls`` — TLS with a required client certificate.

In both secured modes the broker authorizes requests with ACLs (``StandardAuthorizer``),
allowing what no ACL names, so a missing ACL can be rehearsed with a DENY.

Only the client listener is secured: the broker's own listeners (the KRaft controller's,
and the inter-broker one the broker uses to reach itself) stay PLAINTEXT on loopback.

The certificates (a CA, the broker's for ``localhost`` and ``127.0.0.1``, a client's) and
the user's password are made once per scratch folder by :func:`material` with the
``cryptography`` package, kept there as PEM files, and reused when the same folder is
started again. The broker reads PEM directly (``ssl.keystore.type=PEM``): no Java key
store is written.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from devkit.errors import DevBrokerError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.x509 import Certificate, Name

Security = Literal["plaintext", "sasl-ssl", "mtls"]
MODES: tuple[Security, ...] = ("plaintext", "sasl-ssl", "mtls")
USERNAME = "kec"
SCRAM = "SCRAM-SHA-512"
# The client listener's name (and protocol) in each mode.
LISTENER: dict[Security, str] = {"plaintext": "PLAINTEXT", "sasl-ssl": "SASL_SSL", "mtls": "SSL"}
_VALID_DAYS = 365
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


def mode(value: str) -> Security:
    """``value`` as a security mode; anything else is a :class:`DevBrokerError`."""
    if value not in MODES:
        raise DevBrokerError(f"unknown security mode {value!r}: use one of {', '.join(MODES)}")
    return value


@dataclass(frozen=True)
class Material:
    """A session's certificates (PEM files in ``folder``) and its SASL user."""

    folder: Path
    username: str
    password: str

    @property
    def ca(self) -> Path:
        """The CA certificate that signed the broker's and the client's certificates."""
        return self.folder / "ca.pem"

    @property
    def broker_certificate(self) -> Path:
        return self.folder / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.folder / "broker.key"

    @property
    def client_certificate(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"

    @property
    def _credentials(self) -> Path:
        return self.folder / "credentials.json"

    def _files(self) -> list[Path]:
        return [self.ca, self.broker_certificate, self.broker_key, self.client_certificate,
                self.client_key, self._credentials]  # fmt: skip


def material(folder: Path) -> Material:
    """The certificates and user in ``folder``: the ones made before, else new ones."""
    found = Material(folder, USERNAME, "")
    if all(path.exists() for path in found._files()):
        saved = json.loads(found._credentials.read_text())
        return Material(folder, str(saved["username"]), str(saved["password"]))
    made = Material(folder, USERNAME, secrets.token_urlsafe(18))
    _make(made)
    return made


def _make(made: Material) -> None:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:
        raise DevBrokerError(
            "the sasl-ssl and mtls modes make certificates with the 'cryptography' package: "
            "install the project's test extra (pip install -e '.[test]')"
        ) from exc

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kafka-event-connector dev-broker"),
                x509.NameAttribute(NameOID.COMMON_NAME, common),
            ]
        )

    def key() -> RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def certificate(
        subject: Name,
        public: RSAPrivateKey,
        signer: RSAPrivateKey,
        issuer: Name,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signer, hashes.SHA256())

    def leaf(
        common: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[Certificate, RSAPrivateKey]:
        own = key()
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([usage]), False),
        ]
        if san:
            extensions.append((x509.SubjectAlternativeName(san), False))
        return certificate(name(common), own, ca_key, ca_name, extensions), own

    ca_key, ca_name = key(), name("kec dev-broker CA")
    ca_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca = certificate(
        ca_name, ca_key, ca_key, ca_name,
        [(x509.BasicConstraints(ca=True, path_length=0), True), (ca_usage, True)],
    )  # fmt: skip
    broker, broker_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client, client_key = leaf("kec-client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def pem(cert: Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def private(own: RSAPrivateKey) -> bytes:
        # PKCS#8 without a password: the only unencrypted form Kafka's PEM key store reads.
        return own.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    made.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(made.folder, 0o700)
    _write(made.ca, pem(ca))
    _write(made.broker_certificate, pem(broker) + pem(ca))
    _write(made.broker_key, private(broker_key))
    _write(made.client_certificate, pem(client))
    _write(made.client_key, private(client_key))
    # Written last: its presence says the rest is complete (see material()).
    _write(made._credentials,
           json.dumps({"username": made.username, "password": made.password}).encode())  # fmt: skip


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _inline(path: Path) -> str:
    """A PEM file as one Java properties value (``\\n`` is a newline there)."""
    return path.read_text().strip().replace("\n", "\\n")


def broker_properties(security: Security, made: Material | None) -> str:
    """server.properties lines that secure the client listener (``LISTENER[security]``);
    the listeners themselves are set by the broker."""
    if security == "plaintext":
        return ""
    assert made is not None
    prefix = f"listener.name.{LISTENER[security].lower()}."
    lines = [
        f"# DevBroker(security={security}): the client listener only.",
        f"{prefix}ssl.keystore.type=PEM",
        f"{prefix}ssl.keystore.certificate.chain={_inline(made.broker_certificate)}",
        f"{prefix}ssl.keystore.key={_inline(made.broker_key)}",
        f"{prefix}ssl.truststore.type=PEM",
        f"{prefix}ssl.truststore.certificates={_inline(made.ca)}",
    ]
    # ACLs work as on a production cluster, yet nothing needs one: what has no ACL is open
    # to every authenticated user (the rehearsal of a missing ACL adds a DENY). The
    # broker's own PLAINTEXT listeners authenticate no one (User:ANONYMOUS): a super user.
    lines += [
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=true",
        "super.users=User:ANONYMOUS",
    ]
    if security == "mtls":
        lines.append(f"{prefix}ssl.client.auth=required")
    else:
        plain_user = f'user_{made.username}="{made.password}"'
        lines += [
            f"sasl.enabled.mechanisms={SCRAM},PLAIN",
            f"{prefix}{SCRAM.lower()}.sasl.jaas.config={_SCRAM_LOGIN} required;",
            f"{prefix}plain.sasl.jaas.config={_PLAIN_LOGIN} required {plain_user};",
        ]
    return "\n".join(lines) + "\n"


def format_arguments(security: Security, made: Material | None) -> list[str]:
    """Arguments of the storage tool's ``format`` that add the mode's SCRAM user."""
    if security != "sasl-ssl":
        return []
    assert made is not None
    return ["--add-scram", f"{SCRAM}=[name={made.username},password={made.password}]"]


def client_properties(security: Security, made: Material | None) -> dict[str, str]:
    """The librdkafka properties (beside ``bootstrap.servers``) of a client of the mode.

    For ``sasl-ssl`` they name SCRAM-SHA-512; ``sasl.mechanism=PLAIN`` with the same user
    works too.
    """
    if security == "plaintext":
        return {}
    assert made is not None
    if security == "mtls":
        return {
            "security.protocol": "SSL",
            "ssl.ca.location": str(made.ca),
            "ssl.certificate.location": str(made.client_certificate),
            "ssl.key.location": str(made.client_key),
        }
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": SCRAM,
        "sasl.username": made.username,
        "sasl.password": made.password,
        "ssl.ca.location": str(made.ca),
    }


def kafka_yaml(bootstrap_servers: str, properties: dict[str, str]) -> str:
    """The ``kafka:`` block of a connector config that reaches this cluster.

    Each librdkafka property becomes the config field of the same name with ``_`` for
    ``.`` (``sasl.username`` -> ``sasl_username``); values are quoted, so a password of
    digits stays a string.
    """
    lines = ["kafka:", f"  bootstrap_servers: {json.dumps(bootstrap_servers)}"]
    for key, value in properties.items():
        line = f"  {key.replace('.', '_')}: {json.dumps(value)}"
        if key == "sasl.mechanism":
            line += "  # or PLAIN, with the same user"
        lines.append(line)
    return "\n".join(lines) + "\n"
