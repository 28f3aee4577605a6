"""Supervisor of one local task: run the command (once, or once per index like an Indexed Job),
then record the exit code in a file that outlives the operator.

    python -m mloop.executors.localrun <exit file> <completions> <parallelism> -- <command...>
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    exit_file, completions, parallelism = argv[0], int(argv[1]), int(argv[2])
    command = argv[argv.index("--") + 1:]
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
