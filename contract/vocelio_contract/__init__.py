"""The contract shared by the operator and the proxy: the `GatewayConfig` model, the
canonical path and route-key rules, ConfigMap sharding with its one part limit, the API-key
record format and the gateway's reserved paths. Pure; neither side's code is imported here."""

#: The distribution's version (pyproject.toml), shared by its three packages.
__version__ = "0.1.0"
