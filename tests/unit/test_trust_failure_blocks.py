"""The per-pod table of addresses blocked for failed authentications: a block
lasts until its time, never shortens, and the table stays bounded (expired
entries go first, then the oldest)."""

from __future__ import annotations

from vocelio_proxy.pipeline.edge import FailureBlocks


def test_a_block_lasts_until_its_time_and_never_shortens() -> None:
    blocks = FailureBlocks()
    blocks.block("1.1.1.1", 100.0, 0.0)
    blocks.block("1.1.1.1", 50.0, 10.0)
    assert blocks.remaining("1.1.1.1", 60.0) == 40.0
    assert blocks.remaining("2.2.2.2", 60.0) == 0.0
    assert blocks.remaining("1.1.1.1", 100.0) == 0.0
    assert len(blocks) == 0


def test_the_table_is_bounded_dropping_expired_then_oldest_entries() -> None:
    blocks = FailureBlocks(max_entries=100)
    for i in range(100):
        blocks.block(f"10.0.0.{i}", 10.0 if i % 2 else 1000.0, 0.0)
    blocks.block("new", 1000.0, 20.0)  # the 50 expired entries go
    assert len(blocks) == 51
    assert blocks.remaining("new", 20.0) > 0
    for i in range(200):
        blocks.block(f"172.16.0.{i}", 1000.0, 20.0)
    assert len(blocks) == 100  # then the oldest
    assert blocks.remaining("172.16.0.199", 20.0) > 0
    assert blocks.remaining("10.0.0.0", 20.0) == 0
