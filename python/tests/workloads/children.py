"""A workload whose child processes mark too: a forked child and a spawned Python process post into the parent's
run (without ending it); the parent's exit ends it. Prints the run id."""

import os
import subprocess
import sys

import lem

CHILD = "import lem\nwith lem.window('spawned'):\n    pass\nlem.result(requests=1)\n"


def main():
    with lem.window("parent"):
        pid = os.fork()
        if pid == 0:
            with lem.window("forked"):
                pass
            lem.result(requests=1)
            sys.exit(0)  # a normal exit: what the child marked is sent, the run is left to the parent
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        subprocess.run([sys.executable, "-c", CHILD], check=True)
    lem.result(requests=1)
    print("run", lem.run_id(), flush=True)


if __name__ == "__main__":
    main()
