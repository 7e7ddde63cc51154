"""A fleet's private CA and the server certificates it signs (python ``cryptography``; EC P-256 everywhere).

P-256 keeps the TLS handshake cheap for ESP32-class boards (mbedTLS verifies an ECDSA chain in well under a
second) and is accepted by OpenSSL, mosquitto, uvicorn and MicroPython's ``ssl`` alike. Only the operator's
provisioning host imports this module: gateways and devices only read the PEM files it writes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
# 825 days is the longest validity TLS clients such as Apple's still accept for a server certificate.
SERVER_DAYS = 825
# Backdated a little so a board whose clock is slightly behind still accepts a fresh certificate.
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class KeyPair:
    """A private key and its certificate, both PEM text."""

    key_pem: str
    cert_pem: str


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "iotfl"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def new_ca(fleet: str, days: int = CA_DAYS) -> KeyPair:
    """A self-signed CA for ``fleet``: may sign server certificates only (path length 0)."""
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    name = _name(f"iotfl {fleet} CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM).decode())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def server_cert(ca: KeyPair, common_name: str, hosts: list[str], days: int = SERVER_DAYS) -> KeyPair:
    """A TLS server certificate for ``hosts`` (DNS names or IP addresses, the first one is the CN) signed by ``ca``."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM).decode())


def cert_hosts(cert_pem: str) -> list[str]:
    """The subject alternative names of a certificate, as text (what a re-run compares with the wanted hosts)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in names]


def signed_by(cert_pem: str, ca: KeyPair) -> bool:
    """Whether ``cert_pem`` was issued by ``ca`` (a rotated CA invalidates every server certificate)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


__all__ = ["CA_DAYS", "KeyPair", "SERVER_DAYS", "cert_hosts", "new_ca", "server_cert", "signed_by"]
