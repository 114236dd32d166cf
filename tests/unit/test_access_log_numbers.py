"""The access log's numbers (`handling._fixed3`): the timestamp and the duration are
written with three decimals, cut, as `f"{value:.3f}"` would write them after
truncation, for any non-negative value the pipeline can produce."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from vocelio_proxy.pipeline.handling import _fixed3


@given(st.floats(min_value=0, max_value=1e13, allow_nan=False, allow_infinity=False))
def test_a_value_is_written_with_three_decimals_cut_not_rounded(value: float) -> None:
    written = _fixed3(value)
    assert re.fullmatch(r"(0|[1-9][0-9]*)\.[0-9]{3}", written)
    assert written == f"{math.floor(value * 1000) / 1000:.3f}" or value * 1000 >= 2**53


def test_timestamps_and_durations_read_as_expected() -> None:
    assert _fixed3(0.0) == "0.000"
    assert _fixed3(0.0005) == "0.000"
    assert _fixed3(3.2) == "3.200"
    assert _fixed3(12.3456) == "12.345"
    assert _fixed3(1_795_000_000.1239) == "1795000000.123"
