"""The HTTP/1.1 wire rules, written once and without I/O (in the style of h11):
status lines and the one reasons table, head building (`heads`), chunk
encoding (`chunks`), request and response framing and keep-alive decisions
(`framing`), body buffers with watermarks and byte budgets (`body`), the
limits (`limits`), a request reader that turns bytes into requests, body
data and ends on top of llhttp (`reader`), and the reader of upstream answer
heads shared by the upstream client and the tunnel (`answers`).

Callers are the I/O shells: the client-facing server (`server`), the upstream
client (`upstream`) and the tunnel (`tunnel`). Nothing here opens a socket,
reads a clock or imports asyncio; the unit tests drive it with bytes."""
