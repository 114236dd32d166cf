"""The operator's one way to the API server: credentials are loaded once per call
by `load_configuration` (the pod's service account in a cluster, else the kubeconfig)
and handed to both consumers: the writer's `kubernetes_asyncio` client and kopf, as
the `ConnectionInfo` its login handler returns (`connection_info`). kopf calls the
login handler again when the API answers 401, so a rotated service-account token is
read from the same file the writer's client re-reads. Called by `kube.handlers`."""

from __future__ import annotations

import os

import kopf
from kubernetes_asyncio import client, config

_TOKEN = "BearerToken"  # noqa: S105 - the name kubernetes_asyncio files the token under


async def load_configuration() -> client.Configuration:
    """In-cluster service account, else the kubeconfig (`KUBECONFIG`, read now, or
    ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return configuration


async def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials in kopf's terms: server, CA, client certificate or token."""
    header = await configuration.get_api_key_with_prefix(_TOKEN)
    scheme = token = None
    if header:
        scheme, _, token = str(header).partition(" ") if " " in str(header) else ("Bearer", "", str(header))
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
    )
