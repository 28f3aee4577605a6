"""Supervisor of one local task: claim it, run the command (once, or once per index like an Indexed Job),
then record the exit code in a file that outlives the operator.

    python -m mloop.executors.localrun <record> <exit file> <deadline s> <completions> <parallelism> -- <command...>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def claim(record: str, deadline_seconds: int) -> bool:
    """Record this process as the task's, unless a supervisor already is: of racing ones exactly one wins.

    The record is complete before it appears (written aside, then hard-linked, which never replaces), and it
    appears before the command starts, so a task is never running without a pid the operator can watch.
    """
    aside = f"{record}.{os.getpid()}.tmp"
    with open(aside, "w") as f:
        json.dump({"pid": os.getpid(), "started": time.time(), "deadline": deadline_seconds}, f)
    try:
        os.link(aside, record)
    except FileExistsError:
        return False
    finally:
        os.unlink(aside)
    return True


def main(argv: list[str]) -> int:
    record, exit_file, deadline = argv[0], argv[1], int(argv[2])
    completions, parallelism = int(argv[3]), int(argv[4])
    command = argv[argv.index("--") + 1:]
    if not claim(record, deadline):
        return 0
    pending = list(range(completions))
    running: dict[int, subprocess.Popen[bytes]] = {}
    worst = 0
    while pending or running:
        while pending and len(running) < parallelism:
            index = pending.pop(0)
            env = {**os.environ, "JOB_COMPLETION_INDEX": str(index)} if completions > 1 else dict(os.environ)
            running[index] = subprocess.Popen(command, env=env)
        for index, proc in list(running.items()):
            code = proc.poll()
            if code is not None:
                worst = worst or code
                del running[index]
        time.sleep(0.05)
    tmp = exit_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(worst))
    os.replace(tmp, exit_file)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
