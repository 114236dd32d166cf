"""Tenant isolation in the control plane (docs/multi-tenancy.md): who may
reference whose Services (`grants`), claim which path prefixes (`claims`),
point at which addresses (`addresses`), publish which API keys
(`allowances`) and which RateTiers are enforced (`tiers`), plus the admin-owned
settings they are built from (`policy`).
Every module here is pure (no I/O, no clock); the renderer and the reconciler
call them."""
