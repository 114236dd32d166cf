"""TLS listener fixtures (tests/harness/tls_fixtures.py) for this folder."""

from tests.harness.tls_fixtures import ca, tls_gateway

__all__ = ["ca", "tls_gateway"]
