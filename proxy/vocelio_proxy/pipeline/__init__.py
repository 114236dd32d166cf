"""The per-request pipeline: early refusals, the gateway's own endpoints, the edge
policy (authenticate, authorize, rate-limit) and the proxy handler. Built by the composition
root with the collaborators it needs; never reads the application."""
