"""Install the CRDs straight from the API models, so an installed mloop needs no crds/ folder."""

from __future__ import annotations

import time

from mloop.api.crdgen import render
from mloop.api.kinds import GROUP, KINDS
from mloop.k8s.kubectl import kubectl


def install_crds(kubeconfig: str | None = None, timeout: str = "60s") -> None:
    manifest = "---\n".join(render(info) for info in KINDS)
    kubectl("apply", "--server-side", "--field-manager=mloop", "--force-conflicts", "-f", "-",
            kubeconfig=kubeconfig, input=manifest, check=True)
    names = [f"crd/{info.crd_name}" for info in KINDS]
    kubectl("wait", "--for=condition=Established", f"--timeout={timeout}", *names, kubeconfig=kubeconfig, check=True)
    # Discovery lags a moment behind Established; `kubectl get mloop` needs the category in it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = kubectl("api-resources", f"--api-group={GROUP}", "--categories=mloop", "-o", "name", kubeconfig=kubeconfig)
        if len(found.stdout.split()) == len(KINDS):
            return
        time.sleep(0.5)
    raise TimeoutError("the mloop kinds did not appear in API discovery within 30s")
