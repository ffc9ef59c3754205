"""Marker latency: how late lem-run stamps a stdout marker line after the workload printed it, against the
workload's own clock. Prints N phase markers (names m0 … mN-1) at a fixed interval, each right after reading the
clock, and writes those times to a file; `marker_latency.py compare TIMES MANIFEST` then compares them with the
phases' start times in lem-run's manifest. Usage (from the repository root):

    bin/lem-run --replay testdata/traces/h200-llm.parquet --loop --baseline 1s --experiment ml --out /tmp/ml -- \\
        python3 scripts/bench/marker_latency.py emit /tmp/ml/times.txt 250 0.02
    python3 scripts/bench/marker_latency.py compare /tmp/ml/times.txt /tmp/ml/*/manifest.json
"""
import json
import statistics
import sys
import time


def emit(path, n, every):
    with open(path, "w") as f:
        nxt = time.time()
        for i in range(n):
            t = time.time_ns()
            print(f"LEM_PHASE m{i}", flush=True)
            f.write(f"m{i} {t}\n")
            nxt += every
            time.sleep(max(0.0, nxt - time.time()))


def parse_time(s):
    # RFC 3339 with nanoseconds, as the manifest writes them.
    from datetime import datetime, timezone
    base, _, frac = s.rstrip("Z").partition(".")
    secs = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return int(secs) * 10**9 + int((frac + "000000000")[:9])


def compare(times, manifest):
    sent = dict(line.split() for line in open(times))
    m = json.load(open(manifest))
    lat = sorted((parse_time(p["start"]) - int(sent[p["name"]])) / 1e6 for p in m["phases"] if p["name"] in sent)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"{len(lat)} markers: latency ms median {statistics.median(lat):.3f}, p90 {q(0.9):.3f}, p99 {q(0.99):.3f}, "
          f"max {lat[-1]:.3f}, min {lat[0]:.3f}; mean {statistics.mean(lat):.3f} ± {statistics.pstdev(lat):.3f} (sd)")


if __name__ == "__main__":
    if sys.argv[1] == "emit":
        emit(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        compare(sys.argv[2], sys.argv[3])
