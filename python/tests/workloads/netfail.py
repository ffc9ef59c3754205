"""A workload whose marker server dies under it: it marks, says "ready", waits for "go" on stdin (the server is
killed meanwhile), marks on, and prints what it saw as JSON."""

import json
import sys
import time

import lem


def main():
    with lem.window("before") as before:
        time.sleep(0.2)
    e_before = before.energy_j
    lem.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    with lem.phase("after"):
        with lem.window("after") as after:
            time.sleep(0.1)
        lem.result(output_tokens=3)
    for i in range(20):
        with lem.window("more", id=i):
            pass
    lem.flush()
    print(json.dumps({"before": e_before, "after": after.energy_j, "duration": after.duration_s,
                      "status": lem.status()}), flush=True)


if __name__ == "__main__":
    main()
