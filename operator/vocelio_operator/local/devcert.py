"""The development certificate of standalone mode's HTTPS listener: a local CA
and a leaf for `localhost`, `127.0.0.1` and `::1`, generated once under a
cache directory and reused while it has more than a week to live. Called by
`standalone.run_standalone`; never used in a cluster (there, certificates come
from kubernetes.io/tls Secrets, docs/tls.md).

The directory is private (0700) and the keys 0600; `ca.pem` is what a client
trusts (`curl --cacert`); the leaf lives in `tls.crt`/`tls.key`, the layout of
a mounted kubernetes.io/tls Secret, so the proxy loads it like any other."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
#: Leaf validity; a new one is made when less than `RENEW_BEFORE` is left.
VALIDITY = datetime.timedelta(days=90)
RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class DevCertificate:
    folder: Path
    ca_file: Path
    created: bool


def default_folder() -> Path:
    """`$XDG_CACHE_HOME/vocelio-gateway/dev-tls` (~/.cache when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vocelio-gateway" / "dev-tls"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _usable(folder: Path, now: datetime.datetime) -> bool:
    try:
        leaf = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
        serialization.load_pem_private_key((folder / "tls.key").read_bytes(), password=None)
        (folder / "ca.pem").read_bytes()
    except (OSError, ValueError, TypeError):
        return False
    return leaf.not_valid_after_utc - now > RENEW_BEFORE


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_dev_certificate(folder: Path | None = None) -> DevCertificate:
    """The development certificate in `folder` (default: `default_folder()`), made
    when missing, unreadable or close to expiry. Raises OSError when the folder
    cannot be written."""
    folder = folder or default_folder()
    now = datetime.datetime.now(datetime.UTC)
    if _usable(folder, now):
        return DevCertificate(folder, folder / "ca.pem", created=False)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Vocelio Gateway development CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vocelio-gateway standalone")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_ADDRESSES]
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    # The CA's key is not kept: nothing else is ever signed with it.
    _write_private(folder / "tls.key", _key_pem(key))
    _write_private(folder / "tls.crt", leaf.public_bytes(pem) + ca.public_bytes(pem))
    _write_private(folder / "ca.pem", ca.public_bytes(pem))
    return DevCertificate(folder, folder / "ca.pem", created=True)
