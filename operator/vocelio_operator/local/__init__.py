"""Standalone mode: resource files instead of the API server, the proxy in-process,
demo backends. The one operator package that composes with the proxy."""
