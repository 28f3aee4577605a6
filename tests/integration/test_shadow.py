"""Shadow evaluation on live traffic, over real HTTP against the real stack: a hanging or dead shadow leaves the
Production server's answers as they were, and what it could not take is counted."""

from __future__ import annotations

import json
import signal
import socket
import threading

from sklearn.datasets import load_iris

from tests.helpers import wait_for
from tests.integration.test_serving import ROW, get, post, served, start_server  # noqa: F401 - served is a fixture


def iris_rows(n: int) -> list[tuple[dict, str]]:
    """n iris rows in a fixed shuffled order, with their true species."""
    import numpy as np

    data = load_iris(as_frame=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    order = np.random.default_rng(3).permutation(len(data.frame))[:n]
    return [({n_: float(data.frame.iloc[i, j]) for j, n_ in enumerate(names)}, str(data.target_names[data.target[i]]))
            for i in order]


def shadow_count(endpoint: str, target: str, outcome: str | None = None) -> float:
    """mloop_shadow_requests_total for one target (and outcome), summed over the server's workers."""
    total = 0.0
    for line in get(f"{endpoint}/metrics")[1].splitlines():
        if line.startswith("mloop_shadow_requests_total{") and f'target="{target}"' in line and (
                outcome is None or f'outcome="{outcome}"' in line):
            total += float(line.split()[-1])
    return total


class Hanging:
    """A TCP server that accepts connections and never answers: a shadow that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_hanging_or_dead_shadow_never_changes_the_callers_answers(served, tmp_path) -> None:
    """Production's answers with a hanging shadow and a dead one equal its answers without; the requests the
    hanging shadow's bounded queue could not take are counted as dropped, the dead one's as failed."""
    baseline, baseline_endpoint = start_server(served, "--workers", "1", "--sampling-rate", "0")
    hanging = Hanging()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()  # nothing listens there
    targets = tmp_path / "shadows.json"
    targets.write_text("[]")
    shadowed, endpoint = start_server(served, "--workers", "1", "--sampling-rate", "0", "--shadow-file", str(targets),
                                      "--shadow-buffer", "5")
    try:
        targets.write_text(json.dumps([{"package": "hangs", "url": hanging.url, "samplingRate": 1.0},
                                       {"package": "dead", "url": dead_url, "samplingRate": 1.0}]))
        shadowed.send_signal(signal.SIGHUP)  # what the operator does when a candidate starts shadowing
        sent = 0

        def retargeted() -> bool:
            nonlocal sent
            sent += 1
            assert post(f"{endpoint}/predict", {"instances": [ROW]})[0] == 200
            return shadow_count(endpoint, "dead") > 0

        wait_for(retargeted, timeout=30)
        for i, (row, _) in enumerate(iris_rows(50)):
            body = {"id": f"h-{i}", "instances": [row]}
            expected, shadowed_answer = post(f"{baseline_endpoint}/predict", body), post(f"{endpoint}/predict", body)
            sent += 1
            assert shadowed_answer == expected
        assert shadow_count(endpoint, "hangs", "dropped") > 0
        for target in ("hangs", "dead"):  # every copy accounted for: timed out, refused or dropped, none sent
            wait_for(lambda: shadow_count(endpoint, target, "failed") + shadow_count(endpoint, target, "dropped")
                     == sent, timeout=30)
            assert shadow_count(endpoint, target, "sent") == 0
        assert get(f"{endpoint}/v2/health/ready")[0] == 200
    finally:
        for proc in (baseline, shadowed):
            proc.terminate()
            proc.wait(timeout=30)
        hanging.close()
