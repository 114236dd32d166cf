"""Host names for host routing: the grammar of a configured host name (shared by the
operator's resource model, the tenancy claim rules and the contract's `Service`),
the one normalisation of a request's host (called once per request by the proxy's
router), and the Gateway API order of the host groups a request's host falls into.
Pure, no regular expression on the per-request path (docs/host-routing.md).

A configured host name is an RFC 1123 name in lower case: labels of 1-63 letters,
digits and '-' (not at either end), at most 253 characters, no trailing dot, no
port; optionally a wildcard `*.` as the whole first label (`*.example.com`). An
IPv4 literal (a last label of digits only, which no top-level domain is) and an
IPv6 literal are refused: host routing is by name, as in Gateway API.

A wildcard matches one or more labels as a suffix (`*.example.com` matches
`a.example.com` and `a.b.example.com`, never `example.com`), as Gateway API's
HTTPRoute `hostnames` do. Specificity: an exact name beats every wildcard; among
wildcards, the longer suffix wins.
"""

from __future__ import annotations

MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_DIGITS = frozenset("0123456789")
#: The message of the CRD's CEL rule for an IP address in `hostnames`.
IP_ADDRESS_MESSAGE = "a host name must not be an IP address (its last label must not be all digits)"


def _label_ok(label: str) -> bool:
    return (0 < len(label) <= MAX_LABEL_LENGTH and label[0] != "-" and label[-1] != "-"
            and _LABEL_CHARS.issuperset(label))


def is_dns_name(name: str) -> bool:
    """`name` is a lower-case RFC 1123 host name (no wildcard, no trailing dot) that is not an
    IPv4 literal."""
    if not 0 < len(name) <= MAX_HOST_LENGTH:
        return False
    labels = name.split(".")
    if not all(_label_ok(label) for label in labels):
        return False
    return not _DIGITS.issuperset(labels[-1])


def host_problem(host: str) -> str | None:
    """Why `host` is not a configurable host name (exact or `*.` wildcard), or None."""
    shown = repr(host[:80])
    if host != host.lower():
        return f"host {shown} must be lower case"
    if host.endswith("."):
        return f"host {shown} must not end with a dot"
    if ":" in host or host.startswith("["):
        return f"host {shown} must be a name without a port (IP literals are not routed by name)"
    name = host[2:] if host.startswith("*.") else host
    if "*" in name:
        return f"host {shown}: a wildcard is allowed only as the whole first label ('*.example.com')"
    if len(host) > MAX_HOST_LENGTH:
        return f"host {shown} is longer than {MAX_HOST_LENGTH} characters"
    if name and _DIGITS.issuperset(name.rsplit(".", 1)[-1]):
        # The CRD's CEL rule, with its message (`vocelio-gateway validate` says what the API server says).
        return f"host {shown}: {IP_ADDRESS_MESSAGE}"
    if not is_dns_name(name):
        return (f"host {shown} is not an RFC 1123 host name (labels of 1-63 lower-case letters, digits and '-', "
                "not starting or ending with '-'; not an IP address)")
    return None


def is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def specificity(host: str) -> tuple[int, int]:
    """Sort key, most specific first when sorted in reverse: exact names beat wildcards,
    then the longer name (for wildcards: the longer suffix) wins. "" (no host) is least."""
    if not host:
        return (0, 0)
    return (1, len(host)) if is_wildcard(host) else (2, len(host))


def host_covers(pattern: str, host: str) -> bool:
    """`pattern` (a configured host or `*.` wildcard) matches `host`, which is itself a
    configured host or wildcard: exact equality, or a wildcard whose suffix `host` lies
    strictly below (`*.example.com` covers `a.example.com` and `*.a.example.com`, and
    itself, never `example.com`)."""
    if pattern == host:
        return True
    if not is_wildcard(pattern):
        return False
    suffix = pattern[1:]  # ".example.com"
    name = host[2:] if is_wildcard(host) else host
    return name.endswith(suffix) and len(name) > len(suffix)


def request_host(raw: str) -> str:
    """The host a request is routed by, from its `Host` (or absolute-form authority, or
    `:authority`) as received: ASCII letter case folded, the port cut off, one trailing
    dot removed. "" when it names no routable host (absent, an IP literal, percent
    escapes, underscores, whitespace, control characters, overlong labels: anything that
    is not an RFC 1123 name), so it is served by the services that name no host and never
    matches a configured name in a spelling a backend could read otherwise."""
    if not raw or raw[0] == "[" or len(raw) > MAX_HOST_LENGTH + 7:
        return ""
    colon = raw.rfind(":")
    if colon != -1:
        port = raw[colon + 1:]
        if port and not (port.isascii() and port.isdigit()):
            return ""
        raw = raw[:colon]
    if not raw.isascii():
        return ""  # str.lower would fold non-ASCII letters (the Kelvin sign to 'k')
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    return host if is_dns_name(host) else ""


def candidate_hosts(host: str) -> list[str]:
    """The configured host keys a normalised request host can match, most specific first:
    the name itself, then each wildcard suffix with one more label stripped
    (`a.b.example.com`: `a.b.example.com`, `*.b.example.com`, `*.example.com`, `*.com`)."""
    out = [host]
    dot = host.find(".")
    while dot != -1:
        out.append("*" + host[dot:])
        dot = host.find(".", dot + 1)
    return out
