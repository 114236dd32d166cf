"""Proxy static settings: everything that is not dynamic config. Read from an
optional settings file (YAML/JSON), then `VOCELIO_*` environment variables
(which override the file, 12-factor style), then CLI flags (highest
precedence). Consumed by the application factory; the Helm chart renders these
as env."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as EnvParseError

from vocelio_contract.logs import LogFormat, LogLevel
from vocelio_contract.reserved import RESERVED_PATHS
from vocelio_proxy.policy.authority import parse_authority


class CorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    allow_origins: list[str] = Field(default_factory=list, description="Exact origins, or '*'.")
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"])
    expose_headers: list[str] = Field(default_factory=lambda: [
        "X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"])
    allow_credentials: bool = False
    max_age_s: int = 600

    @model_validator(mode="after")
    def _credentials_need_exact_origins(self) -> CorsSettings:
        # Browsers refuse `*` with credentials; the only way to "make it work" is to reflect
        # every origin, which lets any site read users' data. Refused here, once, at load.
        if self.allow_credentials and "*" in self.allow_origins:
            raise ValueError("cors.allow_origins '*' cannot be combined with cors.allow_credentials: "
                             "list the exact origins that may send credentials")
        for origin in self.allow_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"cors.allow_origins: {origin!r} is not an origin "
                                 "(scheme://host[:port], no path, no trailing slash; 'null' is never allowed)")
        return self


_ORIGIN = re.compile(r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")


JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


class JwtIssuer(BaseModel):
    """One accepted token issuer and how its signatures are checked."""

    model_config = ConfigDict(extra="forbid")
    issuer: str = Field(description="Expected `iss` claim.")
    audiences: list[str] = Field(default_factory=list, description="Accepted `aud` values (empty: not checked).")
    algorithms: list[JwtAlgorithm] = Field(default=["RS256"], description="Accepted `alg` values.")
    secret: str | None = Field(None, description="HMAC secret for HS* algorithms.", repr=False)
    public_keys: dict[str, str] = Field(default_factory=dict, description="kid -> PEM public key.", repr=False)
    jwks_url: str | None = Field(None, description="JWKS document with the issuer's public keys.")
    secret_file: Path | None = Field(
        None, description="File holding the HMAC secret (a mounted Secret key; the chart's "
                          "credentials.jwtIssuerSecrets), read at load instead of `secret`.")

    @model_validator(mode="before")
    @classmethod
    def _secret_from_file(cls, data: Any) -> Any:
        # Credentials stay in Secrets: the settings file names a mounted file, never holds the secret.
        if isinstance(data, dict) and data.get("secret_file") is not None:
            if data.get("secret") is not None:
                raise ValueError(f"issuer {data.get('issuer')!r}: set secret or secret_file, not both")
            data = {**data, "secret": read_credential(Path(data["secret_file"]), f"issuer {data.get('issuer')!r}")}
        return data

    @model_validator(mode="after")
    def _keys_fit_the_algorithms(self) -> JwtIssuer:
        hmac = sorted(a for a in self.algorithms if a.startswith("HS"))
        if hmac and not self.secret:
            raise ValueError(f"issuer {self.issuer!r} accepts {', '.join(hmac)} but has no secret")
        for kid, pem in self.public_keys.items():
            if _public_key_kind(pem) is None:
                raise ValueError(f"issuer {self.issuer!r}: public key {kid!r} is not a PEM RSA, P-256 or P-384 "
                                 "public key")
        return self


def read_credential(path: Path, what: str) -> str:
    """A credential from a mounted file (one trailing newline dropped); a one-line error naming
    the file, never its content, when it cannot be read or is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: cannot read credential file {path} ({type(exc).__name__})") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError(f"{what}: credential file {path} is empty")
    return text


def _public_key_kind(pem: str) -> str | None:
    """"RSA", "P-256" or "P-384" for a PEM public key the gateway can verify with, else None."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "P-256", "secp384r1": "P-384"}.get(key.curve.name)
    return None


class ClaimNames(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = "sub"
    tenant: str = "org_id"
    roles: str = "roles"
    scope: str = "scope"
    tier: str = "tier"


class AuthFailureLimit(BaseModel):
    """No free brute force: every failed authentication (401 for presented credentials)
    costs the client address one request in this limit; past it, requests carrying
    credentials get 429 before any verification until the window has passed."""

    model_config = ConfigDict(extra="forbid")
    requests: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        30, description="Failed authentications per window and client address; 0 turns the limit off.")
    window_s: Annotated[int, Field(ge=1, le=86400)] = Field(60, description="Window of the limit (seconds).")


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    issuers: list[JwtIssuer] = Field(default_factory=list)
    claims: ClaimNames = ClaimNames()
    leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0
    max_token_bytes: Annotated[int, Field(ge=256, le=65536)] = 8192
    jwks_refresh_min_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    claim_encoding: Literal["refuse", "percent"] = Field(
        "refuse", description="Identity values (user, tenant, roles, tier) that cannot be written into a "
        "header as they are: 'refuse' answers 401 'claim not representable'; 'percent' percent-encodes "
        "their UTF-8 (see docs/security/trust.md).")
    failure_limit: AuthFailureLimit = Field(
        default_factory=lambda: AuthFailureLimit(),
        description="Failed authentications allowed per client address before it is refused (429) "
                    "without verifying its credentials.")


class RateLimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    redis_timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.1
    fail_mode: Literal["open", "closed"] = Field(
        "open", description="open: fall back to a per-process limiter; closed: answer 503.")
    retry_redis_after_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    key_prefix: str = "vrl"
    max_tracked_callers: Annotated[int, Field(ge=1000, le=100_000_000)] = Field(
        100_000, description="Most (limit, caller) windows the in-process limiter keeps (standalone default and "
                             "Redis fallback). Beyond it, windows that have expired go first, then the least "
                             "recently used; an evicted caller starts again from zero.")
    # -- how decisions use Redis (docs/rate-limiting.md) --
    mode: Literal["exact", "lease"] = Field(
        "lease", description="exact: Redis decides every request (one round trip each, batched); lease: each process "
                             "takes slices of a window's budget from Redis and admits from them locally, never more "
                             "than exact mode; it may refuse while other processes hold unspent units (at most "
                             "processes x 1.5 x lease per window, see docs/rate-limiting.md).")
    lease_fraction: Annotated[float, Field(gt=0, le=0.5)] = Field(
        0.01, description="Lease mode: share of a limit one process takes at a time (at least 1 request).")
    lease_max: Annotated[int, Field(ge=1, le=100_000)] = Field(
        1000, description="Lease mode: most requests one process takes at a time (reached by limits of 100,000 "
                          "and more at the default fraction).")
    sync_interval_s: Annotated[float, Field(ge=0.05, le=60)] = Field(
        1.0, description="Lease mode: how often unspent units go back to Redis (leases of ended windows, and leases "
                         "unused for this long).")
    over_limit_cache: bool = Field(
        True, description="Remember a caller Redis refused until one more request could be admitted given the "
                          "counts Redis returned, and refuse it locally until then (exact mode; leases always do).")


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_body_bytes: Annotated[int, Field(ge=0)] = 10 * 1024 * 1024
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 16384
    max_headers: Annotated[int, Field(ge=10, le=1000)] = 100
    max_url_bytes: Annotated[int, Field(ge=256, le=1 << 16)] = 8192
    # -- client connections (server.HttpServer; docs/security/wire.md) --
    client_body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        30.0, description="A request body must make progress within this time (else 408 and close).")
    client_send_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="A client that takes none of its answers for this long is disconnected.")
    max_client_connections: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        10000, description="Open client connections; beyond it new ones get a 503 and a close.")
    max_pipelined_requests: Annotated[int, Field(ge=1, le=1024)] = Field(
        16, description="Parsed but unanswered requests per connection before reading pauses.")
    max_connection_buffer_bytes: Annotated[int, Field(ge=16384, le=64 << 20)] = Field(
        256 * 1024, description="Unsent answer bytes plus queued requests per connection before reading pauses.")
    # -- lingering close (server.HttpConnection; docs/security/wire.md) --
    lingering_time_s: Annotated[float, Field(ge=0, le=600)] = Field(
        5.0, description="After an answer sent before the request was read whole, the longest time input is read "
                         "and dropped so that the close is not a reset that destroys the answer (0: no lingering).")
    lingering_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        1.0, description="A lingering close ends once the client has sent nothing for this long.")


class Http2Settings(BaseModel):
    """HTTP/2 to clients (wire/http2; docs/http2.md): over TLS by ALPN `h2`, and over
    cleartext with prior knowledge when `cleartext` is set."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Offer HTTP/2 (ALPN h2) on TLS listeners.")
    cleartext: bool = Field(False, description="Accept HTTP/2 with prior knowledge (h2c) on the plain listener.")
    max_concurrent_streams: Annotated[int, Field(ge=1, le=1000)] = Field(
        100, description="Open streams per connection; beyond it a new stream is refused (REFUSED_STREAM).")
    max_header_list_size: Annotated[int, Field(ge=4096, le=1 << 20)] = Field(
        32768, description="Decoded header list size (RFC 9113 SETTINGS_MAX_HEADER_LIST_SIZE); above it the "
                           "connection ends (HPACK bomb).")
    max_header_block_bytes: Annotated[int, Field(ge=4096, le=1 << 20)] = Field(
        65536, description="Encoded bytes of one header block (HEADERS + CONTINUATION); above it the connection "
                           "ends with ENHANCE_YOUR_CALM (CONTINUATION flood).")
    initial_window_size: Annotated[int, Field(ge=65535, le=(1 << 31) - 1)] = Field(
        262144, description="Request body bytes a stream may send before the pipeline reads them.")
    connection_window_size: Annotated[int, Field(ge=65535, le=(1 << 31) - 1)] = Field(
        1 << 20, description="Request body bytes all streams of a connection may send before they are read.")
    budget_window_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        10.0, description="The window of the per-connection budgets below.")
    max_resets: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        200, description="Stream resets per window (by the client, or by the gateway for the client's errors); "
                         "beyond it GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).")
    max_control_frames: Annotated[int, Field(ge=10, le=1_000_000)] = Field(
        2000, description="Frames without progress per window (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, empty "
                          "DATA); beyond it GOAWAY ENHANCE_YOUR_CALM.")


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_bytes: Annotated[int, Field(ge=0)] = 1024
    types: list[str] = Field(default_factory=lambda: [
        "application/json", "text/", "application/javascript", "application/xml", "image/svg+xml"])


class ReadinessPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    require_config: bool = True
    require_first_health_round: bool = True
    unready_when_all_breakers_open: bool = Field(
        False,
        description="Only when every service's breaker is open; one failing backend never "
                    "takes the fleet out of rotation.",
    )


class PathSettings(BaseModel):
    """How request paths are canonicalised before routing (docs/security/paths.md).
    Every default refuses a spelling that backends could read as another route."""

    model_config = ConfigDict(extra="forbid")
    case: Literal["reject-mismatch", "insensitive", "sensitive"] = Field(
        "reject-mismatch",
        description="reject-mismatch: refuse a path whose route differs when letter case is ignored "
                    "(/api/x/ADMIN with routes /api/x and /api/x/admin); insensitive: route ignoring case, "
                    "forward as sent; sensitive: exact-case routing (only when every backend is case-sensitive).")
    path_parameters: Literal["reject", "strip", "allow"] = Field(
        "reject",
        description="';' in a segment (servlet path parameters such as ;jsessionid=1): reject; strip them "
                    "(routing and the upstream see the stripped path); allow them as literal characters.")
    trailing_dots_and_spaces: Literal["reject", "allow"] = Field(
        "reject", description="A segment ending in '.' or a space (Windows and IIS trim them): reject, or allow "
                              "them as literal characters.")
    encoded_delimiters: Literal["reject", "allow"] = Field(
        "reject", description="%23 ('#') and %3F ('?') in a path, which a decoding hop turns into a fragment "
                              "or a query: reject, or keep encoded.")
    double_encoding: Literal["reject", "allow"] = Field(
        "reject", description="'%25' followed by an escape (%252e): reject, or keep as is.")
    non_ascii: Literal["unambiguous", "reject", "allow"] = Field(
        "unambiguous",
        description="Percent-encoded UTF-8 (always valid UTF-8): unambiguous refuses characters that case "
                    "mapping or compatibility normalisation turns into ASCII, and invisible or space "
                    "characters; reject refuses all non-ASCII; allow accepts any valid UTF-8.")
    format_suffix: Literal["reject", "allow"] = Field(
        "reject",
        description="A segment with a '.suffix' (admin.json) that, with the suffix stripped as Rails "
                    "(.:format) and Spring suffix pattern matching do, would fall under a more specific route "
                    "than the one chosen: reject, or allow (only when no backend strips format suffixes).")


#: The gateway endpoints (see `endpoints.ENDPOINTS`) a listener can serve.
GATEWAY_ENDPOINTS = RESERVED_PATHS
#: Always served on the public listener: the seed's health endpoint and the probes.
ALWAYS_PUBLIC = ("/health", "/livez", "/readyz")


class AdminListener(BaseModel):
    """A second listener for the operator's endpoints, off by default. When it is on,
    the public listener serves only `public_endpoints` of the gateway's own endpoints
    and answers the others 404, as an unrouted path."""

    model_config = ConfigDict(extra="forbid")
    port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        None, description="Port of the admin listener (None: off, every endpoint is public; 0: any free port).")
    host: str = Field("127.0.0.1", description="Address of the admin listener (the chart uses 0.0.0.0 so "
                                               "Prometheus can scrape the pod).")
    public_endpoints: list[str] = Field(
        default_factory=lambda: list(ALWAYS_PUBLIC),
        description="Gateway endpoints the public listener still serves while the admin listener is on.")

    @field_validator("public_endpoints")
    @classmethod
    def _known_endpoints(cls, paths: list[str]) -> list[str]:
        unknown = [p for p in paths if p not in GATEWAY_ENDPOINTS]
        if unknown:
            raise ValueError(f"admin.public_endpoints: {', '.join(unknown)} is not a gateway endpoint "
                             f"({', '.join(GATEWAY_ENDPOINTS)})")
        missing = [p for p in ALWAYS_PUBLIC if p not in paths]
        if missing:
            raise ValueError(f"admin.public_endpoints must include {', '.join(missing)} (always public)")
        return paths


class TracingSettings(BaseModel):
    """Span export (off by default). Off, the gateway passes W3C trace context through
    unchanged; with `otlp-http` it records one span per proxied request and exports it
    with OTLP/HTTP (JSON encoding) to `endpoint` (docs/operations/observability.md)."""

    model_config = ConfigDict(extra="forbid")
    exporter: Literal["none", "otlp-http"] = Field(
        "none", description="none: pass trace context through, export nothing; otlp-http: export the gateway's "
                            "spans to an OpenTelemetry collector (or Jaeger, Tempo) over OTLP/HTTP.")
    endpoint: str = Field("http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces URL.")
    service_name: str = Field("vocelio-gateway", description="The `service.name` of the exported spans.")
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0, description="Share of the traces the gateway starts that are sampled; a caller's sampled flag "
                         "is always followed.")
    export_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        5.0, description="Spans are sent in batches at this interval (and at shutdown).")
    max_queue: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        2048, description="Most spans waiting for export; beyond it new spans are dropped and counted.")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(10.0, description="Timeout of one export request.")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError(f"tracing.endpoint: {url!r} is not an http(s) URL")
        return url


class ResourceFileSettings(BaseModel):
    """Bounds for reading resource YAML files (standalone mode, `validate`): a file past a
    bound is a reported problem for that file, never a crash or a hang."""

    model_config = ConfigDict(extra="forbid")
    max_file_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = Field(
        1 << 20, description="Largest resource file read, in bytes (a ConfigMap holds at most 1 MiB).")
    max_yaml_nodes: Annotated[int, Field(ge=100, le=10_000_000)] = Field(
        100_000, description="Most YAML nodes in one file after alias expansion (bounds 'billion laughs').")
    max_yaml_depth: Annotated[int, Field(ge=8, le=500)] = Field(
        64, description="Deepest nesting of YAML collections in one document.")


#: Mozilla "intermediate" TLS 1.2 ciphers (https://ssl-config.mozilla.org, guideline 5.7): forward-secret
#: AEAD suites only. TLS 1.3 suites are OpenSSL's defaults (all AEAD). No DHE: no DH parameters are loaded.
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


class TlsCertificate(BaseModel):
    """One certificate with its key, from a `kubernetes.io/tls` Secret: mounted as a
    directory (`dir`, holding `tls.crt` and `tls.key`, as kubelet and cert-manager
    write them), as two files, or read through the API (`secret`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Name in logs and metrics (the Secret's name in the chart).",
                      pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    dir: Path | None = Field(None, description="A mounted kubernetes.io/tls Secret: tls.crt and tls.key inside.")
    cert_file: Path | None = Field(None, description="PEM certificate chain (leaf first).")
    key_file: Path | None = Field(None, description="PEM private key of the leaf.")
    secret: str | None = Field(None, description="namespace/name of a kubernetes.io/tls Secret read through the "
                                                 "API (tls.source: api).",
                               pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?/[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")

    @model_validator(mode="after")
    def _one_source(self) -> TlsCertificate:
        given = [self.dir is not None, self.cert_file is not None or self.key_file is not None,
                 self.secret is not None]
        if sum(given) != 1:
            raise ValueError(f"tls certificate {self.name!r}: set exactly one of dir, cert_file+key_file, secret")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(f"tls certificate {self.name!r}: cert_file and key_file go together")
        return self

    @property
    def files(self) -> tuple[Path, Path] | None:
        """(certificate, key) paths for a file source, None for an API one."""
        if self.dir is not None:
            return self.dir / "tls.crt", self.dir / "tls.key"
        if self.cert_file is not None and self.key_file is not None:
            return self.cert_file, self.key_file
        return None


class HstsSettings(BaseModel):
    """Strict-Transport-Security on answers the client receives over https: those of
    the TLS listener, and those of the plain listener to requests a trusted proxy
    received over https (its X-Forwarded-Proto). Never on plain HTTP (RFC 6797 §7.2).
    An upstream's own header is kept."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    max_age_s: Annotated[int, Field(ge=0, le=2 * 365 * 86400)] = Field(
        31536000, description="max-age in seconds (0 tells browsers to forget the policy).")
    include_subdomains: bool = True
    preload: bool = Field(False, description="Ask for the browsers' preload list (needs max-age >= 1 year and "
                                             "includeSubDomains).")

    @model_validator(mode="after")
    def _preload_rules(self) -> HstsSettings:
        # hstspreload.org refuses a header without these; a header that cannot be preloaded must not claim it.
        if self.preload and (self.max_age_s < 31536000 or not self.include_subdomains):
            raise ValueError("tls.hsts.preload needs max_age_s >= 31536000 and include_subdomains")
        return self

    def header(self) -> str:
        value = f"max-age={self.max_age_s}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value


class HttpsRedirect(BaseModel):
    """Plain-HTTP requests answered 308 to the same URL over https (the probes excepted)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        443, description="The HTTPS port clients reach (the Service's), written in Location unless 443.")
    exempt_paths: list[str] = Field(
        default_factory=lambda: list(ALWAYS_PUBLIC),
        description="Paths served over plain HTTP anyway (exact; an entry ending in '/' is a prefix).")


class TlsSettings(BaseModel):
    """The TLS listener (docs/tls.md): off unless enabled."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    host: str | None = Field(None, description="Address of the TLS listener (None: the plain listener's).")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8443, description="Port of the TLS listener (0: any).")
    source: Literal["files", "api"] = Field(
        "files", description="files: mounted Secret directories or files, polled; api: the named Secrets "
                             "watched through the Kubernetes API.")
    certificates: list[TlsCertificate] = Field(
        default_factory=list, description="Certificates chosen by SNI; the first is the default.")
    default_certificate: str | None = Field(
        None, description="Name of the certificate for clients without (or with an unknown) SNI; None: the first.")
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    ciphers: str = Field(MOZILLA_INTERMEDIATE_CIPHERS, description="OpenSSL cipher list for TLS 1.2.")
    alpn: list[Literal["h2", "http/1.1"]] | None = Field(
        None, description="ALPN protocols offered, in server preference order (None: the protocols the gateway "
                          "serves, see `alpn_protocols`).")
    handshake_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        10.0, description="A client must finish the TLS handshake within this time, else it is disconnected.")
    session_tickets: bool = Field(
        False, description="Stateless session tickets (off: resumption uses the per-process session cache, so no "
                           "long-lived ticket key weakens forward secrecy; Mozilla's guidance).")
    reload_interval_s: Annotated[float, Field(ge=0.2, le=300)] = Field(
        2.0, description="How often mounted certificate files are checked for a new version.")
    redirect: HttpsRedirect = Field(default_factory=lambda: HttpsRedirect(),
                                    description="Answer plain-HTTP requests with a 308 to https.")
    hsts: HstsSettings = Field(default_factory=lambda: HstsSettings(),
                               description="Strict-Transport-Security on TLS answers.")

    @model_validator(mode="after")
    def _consistent(self) -> TlsSettings:
        names = [c.name for c in self.certificates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tls.certificates: duplicate name {', '.join(dupes)}")
        if self.default_certificate is not None and self.default_certificate not in names:
            raise ValueError(f"tls.default_certificate {self.default_certificate!r} is not a listed certificate")
        for cert in self.certificates:
            if (cert.secret is not None) != (self.source == "api"):
                raise ValueError(f"tls certificate {cert.name!r}: with tls.source {self.source} every certificate "
                                 + ("names a secret" if self.source == "api" else "names files or a dir"))
        if self.enabled and not self.certificates:
            raise ValueError("tls.enabled needs at least one certificate in tls.certificates")
        if self.alpn is not None and (len(set(self.alpn)) != len(self.alpn) or not self.alpn):
            raise ValueError("tls.alpn: list each protocol once, at least one")
        return self

    def alpn_protocols(self, http2: bool) -> list[str]:
        """What the listener offers: `alpn`, else every protocol the gateway serves (h2
        first when HTTP/2 is on)."""
        if self.alpn is not None:
            return list(self.alpn)
        return ["h2", "http/1.1"] if http2 else ["http/1.1"]

    @model_validator(mode="after")
    def _redirect_paths(self) -> TlsSettings:
        for path in self.redirect.exempt_paths:
            if not path.startswith("/"):
                raise ValueError(f"tls.redirect.exempt_paths: {path!r} is not a path")
        return self


class H2cUpstreamSettings(BaseModel):
    """Bounds of the HTTP/2 (h2c) client to services with `upstream.protocol: h2c`."""

    connections_per_endpoint: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Most h2c connections the proxy opens to one endpoint.")
    streams_per_connection: Annotated[int, Field(ge=1, le=1000)] = Field(
        128, description="Most concurrent streams on one connection (the upstream's own limit may lower it); "
                         "a request finding every stream busy waits for one within its connect timeout.")
    stream_window_bytes: Annotated[int, Field(ge=65_535, le=16 << 20)] = Field(
        256 * 1024, description="Response bytes read ahead per stream before the client takes them.")
    max_header_list_bytes: Annotated[int, Field(ge=4096, le=1 << 20)] = Field(
        65_536, description="Largest response header (or trailer) block accepted from an upstream.")


class ProxySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOCELIO_", env_nested_delimiter="__", extra="forbid")

    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    config_path: Path | None = Field(None, description="GatewayConfig JSON file (a mounted ConfigMap key).")
    config_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    resources_dir: Path | None = Field(None, description="Standalone mode: a folder of resource YAML files.")
    api_keys_path: Path | None = None
    log_level: LogLevel = Field(
        "INFO", description="Log level, any letter case (debug, info, warning, error).")
    log_format: LogFormat = Field(
        "json", description="json: one JSON object per line (production); text: human-readable lines "
                            "for development (process logs and the access log).")
    access_log: bool = True
    trusted_proxies: Annotated[int, Field(ge=0, le=10)] = 0
    trusted_hosts: list[str] = Field(default_factory=list, description="Allowed Host values; empty allows any.")
    cors: CorsSettings = CorsSettings()
    readiness: ReadinessPolicy = ReadinessPolicy()
    drain_timeout_s: Annotated[float, Field(ge=0, le=600)] = 20.0
    shutdown_delay_s: Annotated[float, Field(ge=0, le=60)] = Field(
        5.0, description="After SIGTERM, seconds /readyz answers 503 while the listener still serves, so load "
                         "balancers stop sending before it closes.")
    upstream_idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    client_header_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        10.0, description="A client must send a whole request head within this time (else 408).")
    client_idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        75.0, description="Idle keep-alive client connections are closed after this time.")
    redis_url: str | None = Field(None, description="Redis for global rate limits; unset: per-process limiter.")
    redis_password: str | None = Field(
        None, repr=False, description="Redis password for a URL without one (env VOCELIO_REDIS_PASSWORD, from a "
                                      "Secret: the chart's credentials.redisPassword).")
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (a mounted Secret key), read at load.")
    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    limits: LimitSettings = LimitSettings()
    compression: CompressionSettings = CompressionSettings()
    environment: str = "development"
    paths: PathSettings = PathSettings()
    trusted_proxy_cidrs: list[str] = Field(
        default_factory=list,
        description="Addresses of trusted proxies (nginx set_real_ip_from style, e.g. 10.0.0.0/8). When set, "
                    "X-Forwarded-For is walked from the right skipping these addresses, at most "
                    "`trusted_proxies` hops, and X-Forwarded-Proto/Host are honoured only from them.")
    headers_with_underscores: Literal["allow", "drop", "reject"] = Field(
        "drop", description="Client header names with '_': drop them, reject the request (400) or forward them. "
                            "Underscore spellings of gateway-owned names are dropped whatever this says.")
    admin: AdminListener = Field(default_factory=lambda: AdminListener(),
                                 description="A separate listener for /status, /metrics and /docs.")
    resource_files: ResourceFileSettings = Field(
        ResourceFileSettings(), description="Standalone mode: bounds for reading resource YAML files.")
    tracing: TracingSettings = Field(default_factory=lambda: TracingSettings(),
                                     description="Span export (off: trace context passes through).")
    tls: TlsSettings = Field(default_factory=lambda: TlsSettings(),
                             description="The TLS listener, its certificates, HTTPS redirect and HSTS (docs/tls.md).")
    http2: Http2Settings = Field(default_factory=lambda: Http2Settings(),
                                 description="HTTP/2 to clients (docs/http2.md).")
    h2c_upstream: H2cUpstreamSettings = Field(
        H2cUpstreamSettings(), description="The HTTP/2 client to h2c (gRPC) services: connections and streams.")
    # -- worker processes (lifecycle.supervisor; docs/operations/workers.md) --
    workers: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        1, description="Gateway processes in this pod sharing the listener (SO_REUSEPORT) under one supervisor; "
                       "auto: the CPUs this process may use (affinity and cgroup CPU limit). 1: one process, "
                       "no supervisor. More than 1 needs admin.port (the supervisor serves the pod's metrics "
                       "and probes there).")

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts_are_host_names(cls, hosts: list[str]) -> list[str]:
        normalised = []
        for host in hosts:
            parsed = parse_authority(host)
            if parsed is None or parsed.port is not None:
                raise ValueError(f"trusted_hosts: {host!r} is not a host name (no port, no user, no path)")
            normalised.append(parsed.host)
        return normalised

    @field_validator("trusted_proxy_cidrs")
    @classmethod
    def _cidrs_are_networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"trusted_proxy_cidrs: {cidr!r} is not a network address ({exc})") from None
        return cidrs

    @model_validator(mode="after")
    def _redis_password_from_file(self) -> ProxySettings:
        if self.redis_password_file is not None:
            if self.redis_password is not None:
                raise ValueError("set redis_password or redis_password_file, not both")
            self.redis_password = read_credential(self.redis_password_file, "redis_password_file")
        return self

    @model_validator(mode="after")
    def _trust_settings_agree(self) -> ProxySettings:
        if self.trusted_proxy_cidrs and self.trusted_proxies == 0:
            raise ValueError("trusted_proxy_cidrs needs trusted_proxies >= 1: the most proxy hops to walk "
                             "in X-Forwarded-For")
        admin = self.admin
        if admin.port is not None and admin.port != 0 and admin.port == self.port:
            raise ValueError(f"admin.port {admin.port} is the public port: the admin listener needs its own")
        tls = self.tls
        if tls.enabled and tls.port != 0 and tls.port in (self.port, admin.port):
            raise ValueError(f"tls.port {tls.port} is taken by another listener")
        if tls.alpn is not None and "h2" in tls.alpn and not self.http2.enabled:
            # Offering h2 to clients the server would not answer in HTTP/2 would break them.
            raise ValueError("tls.alpn offers h2 while http2.enabled is false")
        if self.workers != 1 and admin.port is None:
            raise ValueError(f"workers {self.workers} needs admin.port: the supervisor serves the pod's /metrics, "
                             "/readyz and /status there (a scrape on the shared port would reach one worker)")
        return self


class SettingsError(ValueError):
    """Settings that do not load, as one line per problem (`field: why`)."""


def settings_problems(exc: ValidationError, from_env: frozenset[str] = frozenset()) -> str:
    """A ValidationError as one line per problem, without pydantic's type codes and URLs.
    A problem in a setting that came from the environment names its variable."""
    lines = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        where = ".".join(parts)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        if parts and parts[0] in from_env:
            where += f" (environment {env_name(parts)})"
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def env_name(parts: list[str]) -> str:
    """The environment variable of a settings path: ["auth", "leeway_s"] -> VOCELIO_AUTH__LEEWAY_S."""
    return "VOCELIO_" + "__".join(p.upper() for p in parts)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = _merged(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def read_settings_file(settings_file: Path) -> dict[str, Any]:
    """The mapping in a settings file; `SettingsError` (one line) when it cannot be read or parsed."""
    try:
        text = settings_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{settings_file}: cannot read the settings file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{settings_file}: the settings file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise SettingsError(f"{settings_file}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{settings_file}: settings must be a mapping")
    return data


def load_settings(settings_file: Path | None = None, defaults: dict[str, Any] | None = None,
                  **overrides: Any) -> ProxySettings:
    """Settings from `defaults` (the command's own, lowest), then the file, then the
    `VOCELIO_*` environment (12-factor: the environment overrides the file), then
    explicit overrides (CLI flags; None means not given). Raises `SettingsError` with a
    one-line message when they do not load."""
    data: dict[str, Any] = dict(defaults or {})
    if settings_file is not None:
        data = _merged(data, read_settings_file(settings_file))
    try:
        env = EnvSettingsSource(ProxySettings)()
    except EnvParseError as exc:
        raise SettingsError(f"invalid settings: {' '.join(str(exc).split())} (a list or mapping is "
                            "written as JSON, e.g. VOCELIO_TRUSTED_HOSTS='[\"api.example.com\"]')") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    data = _merged(_merged(data, env), given)
    try:
        return ProxySettings(**data)
    except ValidationError as exc:
        from_env = frozenset(env) - frozenset(given)
        raise SettingsError(f"invalid settings: {settings_problems(exc, from_env)}") from None
