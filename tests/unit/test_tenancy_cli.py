"""A bad tenancy document stops the operator at start with one line naming the
field (exit 2), never a traceback and never a half-applied policy."""

from __future__ import annotations

import pytest

from vocelio_operator.cli import main


@pytest.mark.parametrize(("document", "expected"), [
    ('{"prefixClaims": {"rules": [{"namespaces": ["Team A"], "prefixes": ["/x"]}]}}',
     "tenancy.prefixClaims.rules.0.namespaces.0"),
    ('{"staticEndpoints": {"denyCidrs": ["169.254.169.254/40"]}}', "169.254.169.254/40"),
    ('{"apiKeys": {"namespace": ["typo"]}}', "tenancy.apiKeys.namespace"),
    ("not json", "written as JSON"),
])
def test_a_bad_tenancy_document_is_one_line_and_exit_2(document: str, expected: str, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("VOCELIO_OPERATOR_TENANCY", document)
    assert main(["operator", "--liveness-port", "0", "--metrics-port", "0"]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
