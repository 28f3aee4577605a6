"""The erasure handler decides and writes on the body it read, not on kopf's live body.

kopf gives timers (and every handler of an object that has one) a Body that each watch event replaces in place. A
pass that read status, then read the resourceVersion for its conditional write after another pass's write had
arrived, wrote with the newer precondition and won: ErasureStarted was posted twice after a restart."""

from __future__ import annotations

import kopf

from mloop.handlers.erasure import _snapshot


def test_a_pass_keeps_the_resource_version_it_decided_on() -> None:
    body = kopf.Body({"kind": "ErasureRequest", "metadata": {"name": "dsr", "resourceVersion": "7"}, "status": {}})
    seen = _snapshot(body)
    body._replace_with({"kind": "ErasureRequest", "metadata": {"name": "dsr", "resourceVersion": "8"},
                        "status": {"phase": "Erasing"}})  # what kopf does when the other pass's write arrives
    assert body["metadata"]["resourceVersion"] == "8"  # the live body moved under the pass
    assert seen["metadata"]["resourceVersion"] == "7" and seen["status"] == {}
