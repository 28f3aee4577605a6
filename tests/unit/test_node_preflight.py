"""The real node's preflight says up front what would make it fail later, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop.localcluster.node import NodePaths, NodeUnavailable, preflight


def test_a_stack_folder_too_long_for_the_nodes_unix_sockets_is_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / ("d" * 80)
    socket = NodePaths(folder / "node").containerd / "containerd.sock.ttrpc"
    assert len(str(socket)) > 104  # containerd would exit at start, past the bridge and the control plane
    with pytest.raises(NodeUnavailable) as refused:
        preflight(folder)
    assert f"a shorter stack folder than {folder} ({socket} is {len(str(socket))} characters" in str(refused.value)
    assert "MLOOP_DEV_DIR sets it" in str(refused.value)
