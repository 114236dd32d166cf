"""TLS listener fixtures (tests/harness/tls_fixtures.py) for this folder."""

from tests.harness.tls_fixtures import ca, event_loop_policy, tls_gateway

__all__ = ["ca", "event_loop_policy", "tls_gateway"]
