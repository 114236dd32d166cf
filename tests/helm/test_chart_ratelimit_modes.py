"""The chart's rate-limit mode values reach the proxy's settings (and load), and
the schema refuses values the proxy would refuse."""

from __future__ import annotations

import pytest
import yaml

from tests.helm.chart_support import CHART, docs_of, helm, template
from vocelio_proxy.settings import ProxySettings


def loaded_settings(*sets: str) -> ProxySettings:
    # --set-json: plain --set turns 0.05 into a string, which the schema refuses.
    args = [a for s in sets for a in ("--set-json", s)]
    docs = docs_of(template(*args))
    text = next(d for d in docs if d["metadata"]["name"].endswith("proxy-settings"))["data"]["settings.yaml"]
    return ProxySettings(**yaml.safe_load(text))


def test_the_default_is_lease_mode_and_every_mode_value_reaches_the_proxy() -> None:
    default = loaded_settings().rate_limit
    assert (default.mode, default.lease_fraction, default.lease_max, default.sync_interval_s,
            default.over_limit_cache) == ("lease", 0.01, 1000, 1.0, True)
    chosen = loaded_settings('proxy.rateLimit.mode="exact"', "proxy.rateLimit.leaseFraction=0.05",
                             "proxy.rateLimit.leaseMax=20", "proxy.rateLimit.syncIntervalSeconds=0.5",
                             "proxy.rateLimit.overLimitCache=false").rate_limit
    assert (chosen.mode, chosen.lease_fraction, chosen.lease_max, chosen.sync_interval_s,
            chosen.over_limit_cache) == ("exact", 0.05, 20, 0.5, False)


@pytest.mark.parametrize("setting", [
    "proxy.rateLimit.mode=sync", "proxy.rateLimit.leaseFraction=0", "proxy.rateLimit.leaseFraction=0.9",
    "proxy.rateLimit.leaseMax=0", "proxy.rateLimit.syncIntervalSeconds=0.01",
])
def test_rate_limit_mode_values_are_checked_by_the_schema(setting: str) -> None:
    result = helm("template", "vg", str(CHART), "--set", "image.tag=0.1.0", "--set", setting, check=False)
    assert result.returncode != 0, setting
    assert "rateLimit" in result.stderr, result.stderr
