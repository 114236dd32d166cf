"""Lifecycle and composition: the application factory (the only reader of AppKeys),
config sources and the reload loop, and background tasks."""
