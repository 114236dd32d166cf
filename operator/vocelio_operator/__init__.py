"""Vocelio Gateway control plane: the kopf operator, the pure renderer it shares
with standalone mode, and the `vocelio-gateway` CLI."""

__version__ = "0.1.0"
