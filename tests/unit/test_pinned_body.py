"""A handler decides and writes on the body as it was when its pass began, whatever kopf swaps in meanwhile."""

from __future__ import annotations

import kopf

from mloop.handlers.common import pinned


def test_a_watch_event_during_a_pass_does_not_change_the_body_the_pass_writes_with() -> None:
    live = kopf.Body({"metadata": {"name": "d", "resourceVersion": "511"}, "spec": {"a": 1},
                      "status": {"phase": "Pending", "conditions": [{"type": "Ready"}]}})
    seen = {}

    @pinned
    def handler(body: kopf.Body, status: kopf.Status, spec: kopf.Spec, **_: object) -> None:
        # kopf replaces the live body in place when the next watch event arrives (another pass wrote)
        live._replace_with({"metadata": {"name": "d", "resourceVersion": "526"}, "spec": {},
                            "status": {"phase": "Running"}})
        seen.update(rv=body["metadata"]["resourceVersion"], phase=status.get("phase"), spec=dict(spec),
                    conditions=body["status"]["conditions"])

    handler(body=live, status=live.status, spec=live.spec, meta=live.meta)
    assert seen == {"rv": "511", "phase": "Pending", "spec": {"a": 1}, "conditions": [{"type": "Ready"}]}
    assert live["metadata"]["resourceVersion"] == "526"  # the live view itself moved on
