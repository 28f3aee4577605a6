"""A local server slot is never rolled back to an older version of its model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mloop.serving.local import LocalServers


def test_a_pass_of_the_older_package_leaves_the_newer_versions_server_alone(tmp_path: Path) -> None:
    """The old Production package's pass, on an index that has not yet seen the newer package take the stage,
    asks for its own version: the server of the newer version keeps running on its port (the demo saw the old
    version rolled back, then stopped, and the new one restarted on another port)."""
    servers = LocalServers(local_dir=tmp_path)
    newer = subprocess.Popen(["sleep", "60"], start_new_session=True)  # stands in for the newer version's server
    try:
        state = {"pid": newer.pid, "port": 45678, "digest": "sha256:new", "runtime": "auto", "version": 2,
                 "shadows": [], "shadowFile": str(servers.dir / "team.iris.production.shadows")}
        (servers.dir / "team.iris.production.json").write_text(json.dumps(state))
        endpoint, what = servers.ensure("team", "iris", "Production", "s3://mloop/packages/team/iris/1/",
                                        "sha256:old", 1.0, version=1)
        assert (endpoint, what) == ("http://127.0.0.1:45678", "superseded")
        assert newer.poll() is None
        assert json.loads((servers.dir / "team.iris.production.json").read_text()) == state
    finally:
        newer.kill()
        newer.wait()
