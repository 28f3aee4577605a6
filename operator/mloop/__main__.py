"""`python -m mloop`: run the operator against the current kubeconfig, with mloop's settings."""

from __future__ import annotations

import kopf

from mloop.config import get_settings


def main() -> None:
    cfg = get_settings()
    import mloop.handlers  # noqa: F401 - registers the handlers

    kopf.configure(verbose=False)
    namespaces = cfg.watched_namespaces
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not cfg.peering,
        peering_name=cfg.peering or None,
        liveness_endpoint=f"http://0.0.0.0:{cfg.liveness_port}/healthz" if cfg.liveness_port else None,
    )


if __name__ == "__main__":
    main()
