"""Kopf's connection: the same kubernetes.client Configuration the operator's own calls use."""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client as k8s


def connection_info(configuration: k8s.Configuration) -> kopf.ConnectionInfo:
    """Kopf credentials from a kubernetes client Configuration (token, certificates, CA)."""
    if configuration.refresh_api_key_hook is not None:
        configuration.refresh_api_key_hook(configuration)
    header = configuration.get_api_key_with_prefix(
        "BearerToken"
    ) or configuration.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def register(registry: kopf.OperatorRegistry, configuration: k8s.Configuration) -> None:
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration)

    kopf.on.login(id="login", registry=registry)(login)
