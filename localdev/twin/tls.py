"""The twin's own PKI: a CA and a loopback server certificate, made fresh for every twin.

EC P-256 keys keep start-up fast. The certificates carry the extensions Python 3.13's strict
verification wants (critical basicConstraints, key usage, SKI/AKI). ``issue_cert`` lets other twin
services (MAA signing, the Key Vault release JWS ``x5c`` chain) hang their own leaves off this CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=30)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SKR Orchestrator Azure twin"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


@dataclass
class TlsMaterial:
    """CA + server leaf, with PEM files in a private temp directory (removed by ``cleanup``)."""

    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_key: ec.EllipticCurvePrivateKey
    server_cert: x509.Certificate
    directory: Path

    @classmethod
    def generate(cls, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsMaterial:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Azure twin root CA"))
            .issuer_name(_name("Azure twin root CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        material = cls(ca_key=ca_key, ca_cert=ca_cert, server_key=ec.generate_private_key(ec.SECP256R1()),
                       server_cert=ca_cert, directory=Path(tempfile.mkdtemp(prefix="skr-twin-tls-")))
        material.server_cert = material.issue_cert("localhost", material.server_key.public_key(),
                                                   sans=hosts, server=True)
        material.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        material.cert_path.write_bytes(
            material.server_cert.public_bytes(serialization.Encoding.PEM)
            + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        material.key_path.write_bytes(material.server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        material.key_path.chmod(0o600)
        return material

    @property
    def ca_path(self) -> Path:
        """PEM of the CA: what clients trust (``connection_verify``, REQUESTS_CA_BUNDLE)."""
        return self.directory / "ca.pem"

    @property
    def cert_path(self) -> Path:
        return self.directory / "server.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "server-key.pem"

    @property
    def ca_der_b64(self) -> str:
        """The CA certificate as an ``x5c`` entry (standard base64 of DER)."""
        return base64.b64encode(self.ca_cert.public_bytes(serialization.Encoding.DER)).decode()

    def issue_cert(self, common_name: str, public_key: CertificateIssuerPublicKeyTypes, *,
                   sans: tuple[str, ...] = (), server: bool = False, is_ca: bool = False,
                   validity: dt.timedelta = _VALIDITY) -> x509.Certificate:
        """A certificate for ``public_key`` signed by the twin CA (signing leaf unless ``server``)."""
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        alt_names: list[x509.GeneralName] = []
        for host in sans:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt_names.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=is_ca, crl_sign=is_ca,
                                         content_commitment=False, key_encipherment=server and not is_ca,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        if server:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                            critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
