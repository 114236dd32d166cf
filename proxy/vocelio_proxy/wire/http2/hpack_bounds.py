"""The HPACK encoder every HTTP/2 connection of the gateway uses (the client-facing
server in `connection` and the h2c upstream client in `wire.h2c_upstream`, which
install it right after creating h2's state machine).

A peer's SETTINGS_HEADER_TABLE_SIZE is the largest dynamic table it lets the
encoder keep (RFC 7541 §4.2, §6.3), not a size the encoder must use; h2 passes the
peer's value straight to hpack, so a client or upstream announcing 1 GiB would make
the gateway remember every distinct field it sends on the connection (request ids,
trace ids, dates) for as long as the connection lives. `BoundedEncoder` keeps at
most `MAX_ENCODER_TABLE` bytes (the protocol's default, nghttp2's and Envoy's
bound) whatever the peer allows; a smaller value from the peer is honoured.
"""

from __future__ import annotations

from hpack import Encoder

#: The most a gateway encoder's dynamic table holds (RFC 7541's default size).
MAX_ENCODER_TABLE = 4096


class BoundedEncoder(Encoder):
    """hpack's encoder, whose table never grows past `MAX_ENCODER_TABLE` bytes."""

    @property
    def header_table_size(self) -> int:
        return self.header_table.maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The size update the encoder emits says the size it really uses (<= the peer's).
        Encoder.header_table_size.fset(self, min(value, MAX_ENCODER_TABLE))  # type: ignore[attr-defined]
