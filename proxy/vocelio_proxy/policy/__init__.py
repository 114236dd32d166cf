"""Pure policy: routing, balancing, health, breakers, retries, rate-limit arithmetic,
authentication (`auth`), CORS, upgrades, forwarded headers and the error envelope. No I/O;
time comes from an injected clock."""
