"""TLS test tools: a throwaway CA issuing leaf certificates with chosen names,
serials and validity (cryptography, in memory), certificate directories laid
out as kubelet mounts a `kubernetes.io/tls` Secret (`..data` swap), and the
real `openssl s_client` asked which certificate a listener serves. Used by
tests/tls and tests/adversarial/test_tls_*.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .mount import write_configmap_volume


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    serial: int


class TestCa:
    """A CA for one test; `ca_pem` is what clients trust."""

    __test__ = False

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vocelio test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, *names: str, serial: int | None = None, days: float = 10,
              not_before_days: float = -1) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = serial or x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "none")]))
                .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(serial)
                .not_valid_before(now + datetime.timedelta(days=not_before_days))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                .sign(self.key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM) + self.ca_pem, _pem_key(key), serial)


def mount_secret(folder: Path, issued: Issued | None = None, *, cert: bytes | None = None,
                 key: bytes | None = None) -> None:
    """Write (or replace) a kubernetes.io/tls Secret volume: tls.crt and tls.key through `..data`."""
    write_configmap_volume(folder, {"tls.crt": cert if cert is not None else issued.cert_pem if issued else b"",
                                    "tls.key": key if key is not None else issued.key_pem if issued else b""})


@dataclass(frozen=True)
class Handshake:
    ok: bool
    serial: int | None
    protocol: str
    alpn: str | None
    output: str


_SERIAL = re.compile(r"serial=([0-9A-Fa-f]+)")


async def s_client(port: int, *extra: str, servername: str | None = None, ca_file: Path | None = None,
                   timeout_s: float = 15) -> Handshake:
    """Run `openssl s_client` against 127.0.0.1:`port`, print the served leaf's serial."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts"]
    args += ["-servername", servername] if servername is not None else ["-noservername"]
    if ca_file is not None:
        args += ["-CAfile", str(ca_file), "-verify_return_error"]
    args += list(extra)
    proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    text = out.decode(errors="replace")
    serial = None
    leaf = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", out, re.S)
    if leaf:
        serial = x509.load_pem_x509_certificate(leaf.group(0)).serial_number
    protocol = re.search(r"New, (TLSv[0-9.]+), Cipher", text)
    alpn = re.search(r"ALPN protocol: (\S+)", text)
    return Handshake(proc.returncode == 0 and serial is not None, serial, protocol.group(1) if protocol else "",
                     alpn.group(1) if alpn else None, text)


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


class TlsClient:
    """One kept-alive HTTPS connection (asyncio streams), for asking several
    requests on the same TLS session and reading the certificate it was served."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, ca_file: Path, servername: str = "a.example.com",
                      alpn: list[str] | None = None) -> TlsClient:
        ctx = ssl.create_default_context(cafile=str(ca_file))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=servername), 10)
        return cls(reader, writer)

    @property
    def serial(self) -> int:
        sslobj = self.writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def request(self, path: str, host: str = "a.example.com",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await read_response(self.reader)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (what these tests ask for)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return status, headers, body


def served_serial(port: int, servername: str | None, ca_file: Path | None = None, timeout_s: float = 10) -> int | None:
    """The serial of the leaf a listener serves (blocking `openssl s_client`), None on failure."""
    import subprocess

    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    args += ["-servername", servername] if servername is not None else ["-noservername"]
    if ca_file is not None:
        args += ["-CAfile", str(ca_file), "-verify_return_error"]
    try:
        out = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s).stdout
    except subprocess.TimeoutExpired:
        return None
    leaf = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", out, re.S)
    return x509.load_pem_x509_certificate(leaf.group(0)).serial_number if leaf else None
