"""`python -m mloop`: run the operator against the current kubeconfig, with mloop's settings."""

from __future__ import annotations

import kopf

from mloop.config import get_settings


def main() -> None:
    cfg = get_settings()
    import mloop.handlers  # noqa: F401 - registers the handlers

    # Each object's lines start with [namespace/name]: with several replicas, a log shows which one acted.
    kopf.configure(verbose=False, log_prefix=True)
    namespaces = cfg.watched_namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not cfg.peering,
        peering_name=cfg.peering or None,
        liveness_endpoint=liveness_url(cfg.liveness_host, cfg.liveness_port),
    )


def liveness_url(host: str, port: int) -> str | None:
    """Loopback unless configured: in a pod the manifest sets the pod IP, which the kubelet's probe reaches."""
    if not port:
        return None
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"


if __name__ == "__main__":
    main()
