"""The local executor with real processes: one run per task however it is submitted, no task stuck by an
operator killed mid-submit, and a folder per dev stack."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from mloop.config import Settings
from mloop.executors.base import Task
from mloop.executors.local import LocalExecutor
from tests.helpers import wait_for


def counting_task(marker: Path, name: str = "train-iris-0a1b2c3d", seconds: float = 0) -> Task:
    """A task whose every run appends one line to `marker`, so a test can count runs."""
    code = f"import time; open({str(marker)!r}, 'a').write('ran\\n'); time.sleep({seconds})"
    return Task(name=name, namespace="team-a", kind="train", command=["python", "-c", code], prefix="tasks/x/",
                owner={"apiVersion": "mloop.dev/v1alpha1", "kind": "TrainingRun", "name": "iris", "uid": "u1"})


def finished(executor: LocalExecutor, task: Task) -> str:
    state = wait_for(lambda: (s := executor.state(task)).finished and s, timeout=60)
    return state.phase


@pytest.fixture
def executor(tmp_path: Path) -> LocalExecutor:
    return LocalExecutor(Settings(local_dir=str(tmp_path / "local")))


def test_racing_submits_run_the_task_once(executor: LocalExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    task = counting_task(marker)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def submit() -> None:
        barrier.wait()
        try:
            executor.submit(task)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert executor.state(task).phase in ("Running", "Succeeded")  # claimed by the time submit returns
    assert finished(executor, task) == "Succeeded"
    assert marker.read_text() == "ran\n"


def test_claim_left_by_an_operator_killed_before_the_start_does_not_block_the_task(
        executor: LocalExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    task = counting_task(marker)
    # What an operator before this fix left when killed between its claim and starting the process.
    (executor.dir / f"{task.namespace}.{task.name}.json.claim").touch()
    assert executor.state(task).phase == "Missing"  # so the operator submits it again under the same name
    executor.submit(task)
    assert finished(executor, task) == "Succeeded"
    assert marker.read_text() == "ran\n"


def test_supervisor_started_by_an_operator_killed_right_after_runs_the_task_once(
        executor: LocalExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    task = counting_task(marker, seconds=1)
    executor._spawn(task)  # all that a submit killed at its worst moment has done
    assert finished(executor, task) == "Succeeded"
    executor.submit(task)  # the restarted operator submits again: the recorded task is not run twice
    assert executor.state(task).phase == "Succeeded"
    assert marker.read_text() == "ran\n"


def test_supervisor_killed_while_running_is_reported_lost(executor: LocalExecutor, tmp_path: Path) -> None:
    task = counting_task(tmp_path / "runs", seconds=60)
    executor.submit(task)
    assert executor.state(task).phase == "Running"
    pid = json.loads((executor.dir / f"{task.namespace}.{task.name}.json").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)
    state = wait_for(lambda: (s := executor.state(task)).finished and s, timeout=30)
    assert (state.phase, state.reason) == ("Failed", "ProcessLost")


def test_two_folders_do_not_see_each_others_tasks(tmp_path: Path) -> None:
    first = LocalExecutor(Settings(local_dir=str(tmp_path / "a")))
    second = LocalExecutor(Settings(local_dir=str(tmp_path / "b")))
    marker = tmp_path / "runs"
    task = counting_task(marker)
    first.submit(task)
    assert finished(first, task) == "Succeeded"
    assert second.state(task).phase == "Missing"
    second.submit(task)  # the same name in another stack is another task
    assert finished(second, task) == "Succeeded"
    assert marker.read_text() == "ran\nran\n"


def test_dev_env_exports_the_stacks_own_local_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mloop.cli.main import main
    from mloop.localcluster.stack import StackInfo

    stack_dir = tmp_path / "stack-a"
    stack_dir.mkdir()
    # A stack's saved state; no process of it needs to run for `mloop dev env` to print its settings.
    StackInfo(directory=str(stack_dir), kubeconfig=str(stack_dir / "kubeconfig"), api_server="https://127.0.0.1:1",
              s3_endpoint="http://127.0.0.1:2", s3_access_key="k", s3_secret_key="s", bucket="mloop",
              pids={}).save(stack_dir / "state.json")
    monkeypatch.setenv("MLOOP_DEV_DIR", str(stack_dir))
    monkeypatch.setenv("MLOOP_LOCAL_DIR", str(tmp_path / "another-stack" / "local"))  # a shell with stale settings
    assert main(["dev", "env"]) == 0
    exported = dict(line.removeprefix("export ").split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert exported["MLOOP_LOCAL_DIR"] == str(stack_dir / "local")
    # An operator started with only MLOOP_DEV_DIR set uses the same folder.
    monkeypatch.delenv("MLOOP_LOCAL_DIR")
    assert Settings().local_path == stack_dir / "local"


def test_stop_all_ends_the_folders_running_tasks(executor: LocalExecutor, tmp_path: Path) -> None:
    """What `mloop dev down` does to the tasks its stack's operator left running."""
    task = counting_task(tmp_path / "runs", seconds=60)
    executor.submit(task)
    wait_for(lambda: executor.state(task).phase == "Running", timeout=30)
    assert executor.stop_all() == 1
    assert finished(executor, task) == "Failed"
    assert executor.stop_all() == 0


def test_stop_ends_one_task_and_leaves_the_others(executor: LocalExecutor, tmp_path: Path) -> None:
    """What a TrainingRun deleted mid-task does to its own task only."""
    mine, other = (counting_task(tmp_path / "runs", name=n, seconds=60) for n in ("train-a-1", "train-b-2"))
    for task in (mine, other):
        executor.submit(task)
        wait_for(lambda t=task: executor.state(t).phase == "Running", timeout=30)
    assert executor.stop("team-a", "train-a-1") is True
    assert finished(executor, mine) == "Failed" and executor.state(other).phase == "Running"
    assert executor.stop("team-a", "train-a-1") is False and executor.stop("team-a", "train-none") is False
    assert executor.stop_all() == 1


def test_the_operators_local_executor_follows_a_new_stacks_folder(tmp_path: Path, monkeypatch) -> None:
    """One process, two stacks one after the other (as `make test` runs the node suite, then the rest): the second
    stack's tasks go to its own folder, not to the first one's, which its teardown deleted."""
    from mloop.config import get_settings
    from mloop.executors.factory import executor_for

    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        monkeypatch.setenv("MLOOP_LOCAL_DIR", str(folder))
        get_settings.cache_clear()
        executor = executor_for("local")
        assert executor.dir == folder and folder.is_dir()
    get_settings.cache_clear()
