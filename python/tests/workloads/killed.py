"""A workload killed (SIGKILL) with a window open: one window ended before, one left open. Prints its run id."""

import os
import signal
import sys
import time

import lem


def main():
    if len(sys.argv) > 1:
        lem.configure(lease_s=float(sys.argv[1]))
    with lem.window("done"):
        time.sleep(0.3)
    lem.window("doomed").begin()
    time.sleep(0.3)
    lem.flush()
    print("run", lem.run_id(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
