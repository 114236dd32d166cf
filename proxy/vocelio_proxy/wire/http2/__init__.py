"""HTTP/2 to clients: `rules` (sans-I/O: limits, budgets against abuse, the
header rules h2 does not apply, the request and response field lists) and
`connection` (the asyncio shell around `h2.connection.H2Connection`, one
`Exchange` per stream through the same pipeline as HTTP/1.1)."""
