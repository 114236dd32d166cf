"""The manifest `mint-key` prints: no string in it can be read as a number, boolean or null by any YAML
reader (kubectl's reads YAML 1.2, PyYAML 1.1, and they disagree on spellings such as `123456e12345`)."""
from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st

from vocelio_contract.apikeys import mint_key, secret_manifest
from vocelio_operator.cli import quoted_yaml

# Spellings that one YAML reader or another takes for something other than a string.
NUMBER_LIKE = ["123456e12345", "1e5", "0x1F", "0o17", "017", "1_000", ".5", "5.", "+1", "-0", ".inf", ".NaN",
               "true", "False", "yes", "No", "on", "OFF", "y", "n", "null", "~", "", "12:30:00", "2026-11-27"]


def plain_scalars(text: str) -> list[str]:
    """The scalars the YAML scanner reads unquoted (style None): the ones a reader may resolve to a type."""
    return [t.value for t in yaml.scan(text) if isinstance(t, yaml.ScalarToken) and t.style is None]


def test_every_string_in_a_minted_secret_is_double_quoted() -> None:
    _, record = mint_key(name="ci", tenant="acme", tier="premium", roles=["reader"])
    text = quoted_yaml(secret_manifest(record, "apps"))
    assert plain_scalars(text) == []
    assert yaml.safe_load(text) == secret_manifest(record, "apps")


@given(st.sampled_from(NUMBER_LIKE) | st.from_regex(r"[0-9a-fA-FxXeEoO._+-]{1,14}", fullmatch=True))
def test_a_key_id_that_looks_like_a_number_stays_a_string(key_id: str) -> None:
    _, record = mint_key(name=key_id, tenant=key_id, tier="premium", roles=[key_id])
    document = secret_manifest(record.model_copy(update={"id": key_id}), key_id or "apps")
    text = quoted_yaml(document)
    assert plain_scalars(text) == []
    assert yaml.safe_load(text) == document
