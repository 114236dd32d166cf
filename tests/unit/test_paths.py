"""Path canonicalisation: every request path has one canonical spelling, or is
refused when backends could read it differently (docs/security/paths.md)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.paths import DEFAULT_POLICY, PathError, PathPolicy, _canonical, normalize_path, route_key
from vocelio_proxy.settings import PathSettings, ProxySettings


@pytest.mark.parametrize(("raw", "expected"), [
    ("/api/v1/billing", "/api/v1/billing"),
    ("//api///v1//billing/", "/api/v1/billing/"),
    ("/api/v1/public/../admin", "/api/v1/admin"),
    ("/api/v1/public/%2e%2e/admin", "/api/v1/admin"),
    ("/api/v1/public/%2E%2E/admin", "/api/v1/admin"),
    ("/api/v1/public/.%2e/admin", "/api/v1/admin"),
    ("/api/./v1/./x", "/api/v1/x"),
    ("/../../etc/passwd", "/etc/passwd"),
    ("/a/b/..", "/a/"),
    ("/a/b/%2e", "/a/b/"),
    ("/a/%7euser", "/a/~user"),
    ("/a/%41", "/a/A"),
    ("/a/%20b", "/a/%20b"),
    ("/a/b%20c", "/a/b%20c"),
    ("/", "/"),
    ("/.well-known/x", "/.well-known/x"),
    ("/files/v1.2/a..b", "/files/v1.2/a..b"),
])
def test_normalised_paths_resolve_dot_segments_and_duplicate_slashes(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("/users/a%40b.com", "/users/a@b.com"),
    ("/a/%21%24%26%27%28%29%2a%2C%3d%3A", "/a/!$&'()*,=:"),
    ("/a/%2b", "/a/%2B"),  # stays encoded: form decoders read a raw '+' as a space
    ("/a/+", "/a/+"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/caf\u00c3\u00a9", "/caf%C3%A9"),  # raw UTF-8 bytes, as the server decodes them (Latin-1)
    ("/a/%7b%7D", "/a/%7B%7D"),
    ("/a/{x}|", "/a/%7Bx%7D%7C"),
    ("/a/%25zz", "/a/%25zz"),
    ("/a/100%25", "/a/100%25"),
])
def test_each_byte_has_one_canonical_spelling(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


def refused(raw: str, policy: PathPolicy = DEFAULT_POLICY) -> str:
    with pytest.raises(PathError) as info:
        normalize_path(raw, policy)
    return str(info.value)


@pytest.mark.parametrize("raw", ["relative", "", "*", "api/v1/x"])
def test_a_path_must_be_absolute(raw: str) -> None:
    assert "must start with '/'" in refused(raw)


@pytest.mark.parametrize("raw", ["/api/v1/x/admin#", "/api/v1/x/admin#frag", "/api/v1/x#/admin", "/#",
                                 "/api/v1/x/admin%23", "/api/v1/x/admin%23frag", "/a/%3f", "/a/%3Fx=1"])
def test_a_fragment_in_the_target_is_refused_raw_or_encoded(raw: str) -> None:
    assert refused(raw)


def test_encoded_delimiters_can_be_allowed_and_stay_encoded() -> None:
    policy = PathPolicy(encoded_delimiters="allow")
    assert normalize_path("/a/b%23c%3fd", policy) == "/a/b%23c%3Fd"
    assert refused("/a/b#c", policy)  # a raw '#' is never part of a path


@pytest.mark.parametrize("raw", [
    "/api/v1/x/admin;jsessionid=1", "/api/v1/x;foo/admin", "/api/v1/x/..;/admin", "/api/v1/x/admin;",
    "/api/v1/x/;/admin", "/api/v1/x/admin%3bjsessionid=1", "/api/v1/x/..%3B/admin", "/api/v1/x%3B/admin",
])
def test_path_parameters_are_refused_by_default(raw: str) -> None:
    assert refused(raw)


@pytest.mark.parametrize(("raw", "expected"), [
    ("/api/v1/x/admin;jsessionid=1", "/api/v1/x/admin"),
    ("/api/v1/x;foo/admin", "/api/v1/x/admin"),
    ("/api/v1/x/..;/admin", "/api/v1/admin"),
    ("/api/v1/x/;a=b/admin", "/api/v1/x/admin"),
    ("/a/b;x", "/a/b"),
])
def test_stripped_path_parameters_route_and_forward_the_stripped_path(raw: str, expected: str) -> None:
    assert normalize_path(raw, PathPolicy(path_parameters="strip")) == expected


def test_an_encoded_semicolon_is_refused_when_parameters_are_stripped() -> None:
    assert refused("/api/v1/x/admin%3bx", PathPolicy(path_parameters="strip"))


def test_allowed_path_parameters_are_literal_characters() -> None:
    policy = PathPolicy(path_parameters="allow")
    assert normalize_path("/api/v1/x/admin;a=1", policy) == "/api/v1/x/admin;a=1"
    assert normalize_path("/a/b%3bc", policy) == "/a/b%3Bc"


@pytest.mark.parametrize("raw", [
    "/api/v1/x/admin.", "/api/v1/x/admin..", "/api/v1/x/admin...", "/api/v1/x/admin%2e", "/api/v1/x/admin%2E%2E",
    "/api/v1/x/admin%20", "/api/v1/x/admin.%20", "/api/v1/x/admin%20./", "/api/v1/x/.../admin",
    "/api/v1/x/admin./y", "/api/v1/x/%20",
])
def test_trailing_dots_and_spaces_are_refused_by_default(raw: str) -> None:
    assert "ends with" in refused(raw)


def test_trailing_dots_and_spaces_can_be_allowed_as_literal_characters() -> None:
    policy = PathPolicy(trailing_dots_and_spaces="allow")
    assert normalize_path("/api/v1/x/admin.", policy) == "/api/v1/x/admin."
    assert normalize_path("/api/v1/x/admin%20", policy) == "/api/v1/x/admin%20"
    assert normalize_path("/api/v1/x/..", policy) == "/api/v1/"


@pytest.mark.parametrize("raw", ["/public%2F..%2Fadmin", "/a%5c..%5cb", "/a\\b", "/a/%2f", "/a/%5C", "/a/..\\admin"])
def test_encoded_separators_and_backslashes_are_refused(raw: str) -> None:
    assert refused(raw)


@pytest.mark.parametrize("raw", [
    "/a/%00", "/a/\x00", "/a/%0a", "/a/%0D", "/a/%09", "/a/admin%09", "/a/%7f", "/a/\x7f", "/a/\t", "/a/ b",
    "/a/%1b[31m",
])
def test_control_characters_and_raw_spaces_are_refused(raw: str) -> None:
    assert refused(raw)


@pytest.mark.parametrize("raw", ["/a/%u002e%u002e/admin", "/a/%U002E", "/a/%", "/a/%2", "/a/%zz", "/a/%%32%65",
                                 "/a/%-1"])
def test_malformed_escapes_including_iis_percent_u_are_refused(raw: str) -> None:
    assert "percent" in refused(raw)


@pytest.mark.parametrize("raw", [
    "/a/%c0%ae%c0%ae/admin",  # overlong '.'
    "/a/%c0%af",  # overlong '/'
    "/a/%e0%80%ae",  # three-byte overlong '.'
    "/a/%f0%80%80%ae",  # four-byte overlong '.'
    "/a/%c1%9c",  # overlong '\'
    "/a/%ff", "/a/%c3", "/a/%ed%a0%80", "/a/\u00c0\u00ae",
])
def test_invalid_and_overlong_utf8_is_refused(raw: str) -> None:
    assert "UTF-8" in refused(raw)


@pytest.mark.parametrize("raw", [
    "/a/%252e%252e/admin", "/a/%252E", "/a/%252f", "/a/%255c", "/a/%25u002e", "/a/%25%32%65", "/a/%2525",
    "/a/admin%2523",
])
def test_double_encoding_is_refused_by_default(raw: str) -> None:
    assert "double" in refused(raw)


def test_double_encoding_can_be_allowed() -> None:
    assert normalize_path("/a/%252e", PathPolicy(double_encoding="allow")) == "/a/%252e"


@pytest.mark.parametrize("raw", [
    "/a/%ef%bc%8e%ef%bc%8e/admin",  # fullwidth '.'
    "/a/%ef%bc%8f",  # fullwidth '/'
    "/a/%ef%bc%85",  # fullwidth '%'
    "/a/\u00ef\u00bc\u0085",  # the same, raw bytes
    "/a/%ef%bc%a1dmin",  # fullwidth 'A'
    "/a/%e2%84%aa",  # Kelvin sign: lower-cases to 'k'
    "/api/v1/x/adm%c4%b1n",  # dotless i: upper-cases to 'I'
    "/a/%c5%bf",  # long s: upper-cases to 'S'
    "/a/%c3%9f",  # sharp s: upper-cases to 'SS'
    "/a/%c4%b0",  # dotted capital I: lower-cases to 'i' + combining dot
    "/a/%e2%80%8b",  # zero-width space
    "/a/%c2%ad",  # soft hyphen
    "/a/%e2%80%ae",  # right-to-left override
    "/a/%ef%bb%bf",  # byte order mark
    "/a/%c2%85",  # NEL (a C1 control; .NET trims it)
    "/a/admin%c2%a0",  # no-break space
    "/a/admin%e3%80%80",  # ideographic space
    "/a/%e2%80%a8",  # line separator
    "/a/%ee%80%80",  # private use
    "/a/%ef%b7%90",  # noncharacter
    "/a/%e2%85%a0",  # roman numeral one: NFKC 'I'
    "/a/%c2%b9",  # superscript one: NFKC '1'
])
def test_unicode_that_backends_may_read_as_ascii_or_not_at_all_is_refused(raw: str) -> None:
    assert refused(raw)


@pytest.mark.parametrize("raw", ["/caf%C3%A9", "/%E4%B8%AD%E6%96%87", "/%D0%BF%D1%83%D1%82%D1%8C", "/%C3%A9%CC%81"])
def test_unambiguous_unicode_is_accepted(raw: str) -> None:
    assert normalize_path(raw) == raw


def test_non_ascii_can_be_refused_or_allowed_whole() -> None:
    assert refused("/caf%c3%a9", PathPolicy(non_ascii="reject"))
    assert normalize_path("/adm%c4%b1n", PathPolicy(non_ascii="allow")) == "/adm%C4%B1n"
    assert refused("/a/%c0%ae", PathPolicy(non_ascii="allow"))  # never invalid UTF-8


def test_the_policy_is_built_from_the_settings() -> None:
    settings = PathSettings(case="insensitive", path_parameters="strip", trailing_dots_and_spaces="allow",
                            encoded_delimiters="allow", double_encoding="allow", non_ascii="reject",
                            format_suffix="allow")
    assert PathPolicy.from_settings(settings) == PathPolicy(
        "insensitive", "strip", "allow", "allow", "allow", "reject", "allow")
    assert PathPolicy.from_settings(ProxySettings().paths) == DEFAULT_POLICY


def test_the_default_settings_are_the_strict_choices() -> None:
    default = PathSettings()
    assert (default.case, default.path_parameters, default.trailing_dots_and_spaces, default.encoded_delimiters,
            default.double_encoding, default.non_ascii, default.format_suffix) == (
        "reject-mismatch", "reject", "reject", "reject", "reject", "unambiguous", "reject")


PIECES = ["/", "/", "a", "B", "z9", ".", "..", "-", "_", "~", "!", "$", "&", "'", "(", ")", "*", "+", ",", "=",
          ":", "@", ";", "%2e", "%41", "%7e", "%20", "%2B", "%40", "%c3%a9", "%25", "{", "\u00e9"]


@given(st.lists(st.sampled_from(PIECES), max_size=14).map(lambda parts: "/" + "".join(parts)))
def test_the_fast_path_agrees_with_the_full_canonicalisation_and_is_idempotent(raw: str) -> None:
    for policy in (DEFAULT_POLICY, PathPolicy(path_parameters="allow"), PathPolicy(trailing_dots_and_spaces="allow")):
        try:
            slow = _canonical(raw, policy)
        except PathError:
            with pytest.raises(PathError):
                normalize_path(raw, policy)
            continue
        assert normalize_path(raw, policy) == slow
        assert normalize_path(slow, policy) == slow
        assert slow.isascii()
        assert slow.startswith("/")
        assert "//" not in slow
        assert "/./" not in slow + "/"
        assert "/../" not in slow + "/"


# -- route keys --------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [
    "/api/v1/x/admin", "/api/v1/x/admin/", "/api/v1/x/ADMIN", "/API/V1/X/Admin", "/api/v1/x/%61dmin",
    "/api/v1/x/%41DMIN", "/api/v1/x/%61%64%6d%69%6e", "/api/v1/x//admin", "/api/v1/x/y/../admin",
])
def test_spellings_of_one_prefix_have_one_route_key(spelling: str) -> None:
    assert route_key(spelling) == route_key("/api/v1/x/admin") == "/api/v1/x/admin"


@pytest.mark.parametrize(("first", "second"), [
    ("/caf%C3%A9", "/CAF%C3%89"), ("/caf%c3%a9", "/caf%C3%A9"), ("/a+b", "/a%2Bb"), ("/a%20b", "/A%20B"),
    ("/x/~me", "/x/%7EME"), ("/e%CC%81", "/%C3%A9"),
])
def test_prefixes_a_decoding_case_insensitive_backend_reads_alike_have_one_route_key(first: str, second: str) -> None:
    assert route_key(first) == route_key(second)


def test_route_keys_keep_letter_case_only_when_case_is_sensitive() -> None:
    sensitive = PathPolicy(case="sensitive")
    assert route_key("/Admin", sensitive) != route_key("/admin", sensitive)
    assert route_key("/%61dmin", sensitive) == route_key("/admin", sensitive)
    assert route_key("/a+b", sensitive) == route_key("/a%2Bb", sensitive)
    assert route_key("/admin", sensitive) != route_key("/admins", sensitive)


@pytest.mark.parametrize("prefix", ["/a;b", "/admin%2e", "/a%2Fb", "/a%00", "/a%252e", "/a%c0%ae", "relative",
                                    "/a%ef%bc%8e", "/a%20"])
def test_a_prefix_the_policy_refuses_has_no_route_key(prefix: str) -> None:
    with pytest.raises(PathError):
        route_key(prefix)
