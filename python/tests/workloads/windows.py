"""A workload that marks phases, nested and overlapping windows (with ids, from several threads) and results
through the lem package, and writes what it was told about each window as JSON (argv[1])."""

import json
import sys
import threading
import time

import lem


def record(w):
    return {"name": w.name, "id": w.id, "start_ns": w.started_ns, "end_ns": w.ended_ns, "duration_s": w.duration_s,
            "energy_j": w.energy_j, "adjusted_j": w.adjusted_j, "sampled_j": w.sampled_j, "final": w.final,
            "per_gpu": {str(g): e._asdict() for g, e in (w.per_gpu or {}).items()},
            "warnings": w.warnings, "values": w.values}


def main():
    # The longest wait the server allows: on a loaded test host the counter reading after a window's end can come
    # late, and the test wants the counter-exact answers.
    lem.configure(wait_s=10)
    out = {"windows": []}
    done = []
    with lem.phase("warm"):
        time.sleep(0.3)
    with lem.window("batch") as batch:  # three steps nested in a batch
        for i in range(3):
            with lem.window("step") as s:
                time.sleep(0.5)
                s.add(output_tokens=10)
                s.add(output_tokens=7)
            done.append(s)
        out["batch_open"] = batch.energy()  # so far, while it is open
    done.append(batch)

    # Two requests that overlap, each with its own id and counts at the end.
    a = lem.window("req", id="a").begin()
    time.sleep(0.4)
    b = lem.window("req", id="b").begin()
    time.sleep(0.4)
    a.end(output_tokens=5)
    time.sleep(0.4)
    b.end({"output_tokens": 7, "finish": "stop"})
    done += [a, b]

    # Four threads, five windows each: names shared, ids distinct.
    def worker(k):
        for j in range(5):
            with lem.window("thread", id="t%d-%d" % (k, j)) as w:
                time.sleep(0.02)
                w.add(output_tokens=1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    @lem.window("decorated")
    def step():
        time.sleep(0.1)

    step()
    step()
    lem.result(output_tokens=51, requests=3)
    lem.result({"ttft.p50": 0.25})
    lem.result(output_tokens=12)
    out["windows"] = [record(w) for w in done]
    first, last = done[0], done[2]
    out["span"] = lem.energy(first.started_ns, last.ended_ns)
    out["status"] = lem.status()
    out["run_id"] = lem.run_id()
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
