"""Wire and transport: the sans-I/O HTTP/1.1 core (`http1`), the asyncio server around
it, the upstream connection pool and client, and upgrade tunnels. Knows bytes and
connections, not routes or callers."""
