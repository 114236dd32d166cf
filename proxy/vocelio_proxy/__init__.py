"""Vocelio Gateway data plane: the aiohttp proxy and the `GatewayConfig` contract it consumes."""

__version__ = "0.1.0"
