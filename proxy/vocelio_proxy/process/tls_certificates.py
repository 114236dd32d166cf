"""The TLS listener's certificates: checked, loaded, swapped in by SNI table,
and reloaded when their source changes. Built by `lifecycle.app` when
`tls.enabled`; fed by the file poller here (mounted `kubernetes.io/tls` Secret
directories, kubelet's atomic `..data` swap) or by `lifecycle.tls_secrets`
(the API watch of the named Secrets).

What a reload guarantees:

* a new handshake gets the new certificate as soon as it is loaded; open
  connections keep theirs (`wire.tls.TlsEdge` swaps one table reference);
* a new version that does not check out (not PEM, no certificate, an encrypted
  or mismatched key, expired or not yet valid, refused by OpenSSL) never
  replaces the last good one: one warning line naming the certificate and the
  reason (never key material), `vocelio_tls_certificate_reloads_total{result="invalid"}`;
  a certificate whose files disappear keeps serving (`result="missing"`);
* the same bytes are never loaded twice (a content fingerprint), so polling
  costs two small reads per certificate per interval;
* `vocelio_tls_certificate_expiry_timestamp_seconds{certificate}` is the
  served leaf's notAfter, for alerts.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from vocelio_proxy.policy.sni import SniTable
from vocelio_proxy.settings import TlsCertificate, TlsSettings
from vocelio_proxy.wire.tls import TlsEdge, TlsPolicy, load_pair

log = logging.getLogger("vocelio.proxy.tls")

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CertificateProblem(ValueError):
    """Why a certificate/key pair is not served (one line, no key material)."""


@dataclass(frozen=True)
class ServedCertificate:
    """A pair that checked out and is loaded."""

    name: str
    context: ssl.SSLContext
    dns_names: tuple[str, ...]
    serial: str
    not_after: float
    fingerprint: str


def tls_policy(settings: TlsSettings, http2: bool = False) -> TlsPolicy:
    """The listener's TLS policy; ALPN offers h2 first when the HTTP/2 server is on."""
    return TlsPolicy(settings.min_version, settings.ciphers, tuple(settings.alpn_protocols(http2)),
                     settings.session_tickets)


def inspect_pair(cert_pem: bytes, key_pem: bytes, now: float) -> tuple[tuple[str, ...], str, float]:
    """(DNS names, serial in hex, notAfter) of a PEM chain and key; `CertificateProblem`
    when they cannot be served together now."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateProblem("tls.crt holds no PEM certificate") from None
    leaf = chain[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateProblem("tls.key is encrypted (a kubernetes.io/tls key never is)") from None
    except ValueError:
        raise CertificateProblem("tls.key holds no PEM private key") from None
    except UnsupportedAlgorithm:
        raise CertificateProblem("tls.key holds no usable private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                      | ed448.Ed448PrivateKey):
        raise CertificateProblem("tls.key is not an RSA, ECDSA or EdDSA key")
    if key.public_key().public_bytes(*_SPKI) != leaf.public_key().public_bytes(*_SPKI):
        raise CertificateProblem("tls.key does not match the certificate (the first one in tls.crt)")
    not_before = leaf.not_valid_before_utc.timestamp()
    not_after = leaf.not_valid_after_utc.timestamp()
    if now >= not_after:
        raise CertificateProblem(f"the certificate expired at {_iso(not_after)}")
    if now < not_before - 300:  # five minutes of clock skew, as issuers backdate by about that much
        raise CertificateProblem(f"the certificate is not valid before {_iso(not_before)}")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(sans.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return names, f"{leaf.serial_number:x}", not_after


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TlsCertificates:
    """The served set: by name in settings order, the default named by
    `default_certificate` (else the first). `offer` is the one way in."""

    def __init__(self, settings: TlsSettings, edge: TlsEdge, registry: CollectorRegistry,
                 wall: Callable[[], float]) -> None:
        self.settings = settings
        self.edge = edge
        self._wall = wall
        self._order = [c.name for c in settings.certificates]
        self._default = settings.default_certificate or self._order[0]
        self.served: dict[str, ServedCertificate] = {}
        #: Per certificate: fingerprint of the last version offered (served or refused).
        self._seen: dict[str, str] = {}
        #: Per certificate: why its last offered version was refused ("" when it is served).
        self.problems: dict[str, str] = {}
        #: Set whenever a version is offered or found missing (startup waits on it).
        self.changed = asyncio.Event()
        self.reloads = Counter("vocelio_tls_certificate_reloads",
                               "Certificate versions offered to the TLS listener, by certificate and result "
                               "(success, invalid, missing).", ["certificate", "result"], registry=registry)
        self.expiry = Gauge("vocelio_tls_certificate_expiry_timestamp_seconds",
                            "notAfter of the certificate the TLS listener serves, by certificate.",
                            ["certificate"], registry=registry)

    def offer(self, name: str, cert_pem: bytes, key_pem: bytes) -> bool:
        """A version of certificate `name`: served from the next handshake on when it
        checks out (True), else refused and the last good one kept (False)."""
        fingerprint = hashlib.sha256(len(cert_pem).to_bytes(8, "big") + cert_pem + key_pem).hexdigest()
        if self._seen.get(name) == fingerprint:
            return name in self.served and self.served[name].fingerprint == fingerprint
        self._seen[name] = fingerprint
        self.changed.set()
        try:
            names, serial, not_after = inspect_pair(cert_pem, key_pem, self._wall())
            try:
                context = load_pair(self.edge.policy, cert_pem, key_pem)
            except (ssl.SSLError, OSError) as exc:
                raise CertificateProblem(f"OpenSSL refused the pair ({type(exc).__name__}: "
                                         f"{getattr(exc, 'reason', None) or 'unreadable'})") from None
        except CertificateProblem as exc:
            self.problems[name] = str(exc)
            self.reloads.labels(name, "invalid").inc()
            kept = self.served.get(name)
            log.warning("tls certificate refused, the last good one keeps serving" if kept else
                        "tls certificate refused", extra={"fields": {
                            "certificate": name, "reason": str(exc),
                            "serving_serial": kept.serial if kept else None}})
            return False
        previous = self.served.get(name)
        self.served[name] = ServedCertificate(name, context, names, serial, not_after, fingerprint)
        self.problems[name] = ""
        self.reloads.labels(name, "success").inc()
        self.expiry.labels(name).set(not_after)
        self._install()
        log.info("tls certificate loaded" if previous is None else "tls certificate rotated",
                 extra={"fields": {"certificate": name, "serial": serial, "not_after": _iso(not_after),
                                   "names": list(names)[:20],
                                   "previous_serial": previous.serial if previous else None}})
        return True

    def missing(self, name: str, why: str) -> None:
        """The source has no version of `name` now (files gone, Secret deleted or malformed)."""
        marker = "missing:" + why
        if self._seen.get(name) == marker:
            return
        self._seen[name] = marker
        self.changed.set()
        self.problems[name] = why
        self.reloads.labels(name, "missing").inc()
        log.warning("tls certificate unavailable" + (", the last good one keeps serving"
                                                     if name in self.served else ""),
                    extra={"fields": {"certificate": name, "reason": why}})

    def _install(self) -> None:
        served = [self.served[n] for n in self._order if n in self.served]
        default = self.served.get(self._default) or served[0]
        self.edge.install(SniTable([(s.context, s.dns_names) for s in served], default.context))

    def startup_problems(self) -> list[str]:
        """Certificates not served yet, with why (startup refuses to listen without all of them)."""
        return [f"{n}: {self.problems.get(n) or 'not loaded yet'}" for n in self._order if n not in self.served]

    def status(self) -> dict[str, object]:
        return {name: {"serving": name in self.served,
                       "serial": self.served[name].serial if name in self.served else None,
                       "not_after": _iso(self.served[name].not_after) if name in self.served else None,
                       "problem": self.problems.get(name) or None} for name in self._order}


def read_files(cert: TlsCertificate) -> tuple[bytes, bytes] | str:
    """The pair of a file source, or why it cannot be read (one line, no content)."""
    files = cert.files
    assert files is not None
    parts: list[bytes] = []
    for path in files:
        try:
            with path.open("rb") as f:
                data = f.read((1 << 20) + 1)
        except FileNotFoundError:
            return f"{path} does not exist"
        except OSError as exc:
            return f"cannot read {path} ({exc.strerror or type(exc).__name__})"
        if len(data) > 1 << 20:
            return f"{path} is larger than 1 MiB"
        parts.append(data)
    return parts[0], parts[1]


def load_files(store: TlsCertificates, certificates: Iterable[TlsCertificate]) -> None:
    """Offer the current version of every file-sourced certificate."""
    for cert in certificates:
        pair = read_files(cert)
        if isinstance(pair, str):
            store.missing(cert.name, pair)
        else:
            store.offer(cert.name, *pair)


async def poll_files(store: TlsCertificates, interval_s: float) -> None:
    """Re-read the mounted files every `interval_s` (kubelet swaps a Secret volume's
    `..data` link atomically; a read straddling a swap yields a mismatched pair, which
    is refused and replaced by the consistent one on the next poll). Runs until cancelled."""
    certificates = [c for c in store.settings.certificates if c.files is not None]
    while True:
        await asyncio.sleep(interval_s)
        try:
            load_files(store, certificates)
        except Exception:  # a bug must not stop rotation silently: logged, retried next round
            log.exception("tls certificate poll failed")


class HandshakeFailures(Collector):
    """`vocelio_tls_handshake_failures_total{reason}` read from the servers' counts at scrape time."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("vocelio_tls_handshake_failures",
                                     "TLS handshakes that did not complete, by reason (timeout, protocol, reset).",
                                     labels=["reason"])
        for reason, count in sorted(self._counts().items()):
            family.add_metric([reason], count)
        yield family
