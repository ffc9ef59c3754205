"""Summarises scripts/bench-analyze.sh: per input and tool, median wall time, CPU and peak RSS and samples/s; lem's
speed against each peer; the largest difference of each peer's energies from lem's; time per sample across the
scaled inputs. Plain Python (no pandas), so it runs wherever the benchmark does.

    python3 scripts/bench/summarize_analyze.py OUTDIR
"""
import csv
import json
import os
import statistics
import sys

out = sys.argv[1]
runs = [json.loads(line) for line in open(os.path.join(out, "timings.jsonl"))]
inputs = []
for line in open(os.path.join(out, "inputs.txt")):
    name, path, samples = line.split()[:3]
    inputs.append((name, path, int(samples)))
bad = [r for r in runs if r["rc"] != 0]
if bad:
    print("FAILED:", json.dumps(bad))


def table(path):
    rows = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows[(r["run_id"], r["gpu"])] = r
    return rows


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


tools = ["lem", "lem-whole", "duckdb", "pandas"]
names = {"lem": "lem-analyze report -f csv", "lem-whole": "lem-analyze, trace read whole (--stream never)",
         "duckdb": "DuckDB (duckdb-go, SQL)", "pandas": "pandas/pyarrow script"}
print("| input | samples | tool | wall s | CPU s | peak RSS MB | samples/s | lem faster by | rows compared | largest diff: counter J | 50 Hz |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
per_sample = {}
for name, path, samples in inputs:
    lem_wall = None
    lem_rows = None
    for tool in tools:
        rs = [r for r in runs if r["input"] == name and r["tool"] == tool and r["rc"] == 0]
        if not rs:
            continue
        wall = statistics.median(r["wall_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        rss = statistics.median(r["max_rss_mb"] for r in rs)
        per_sample.setdefault(tool, []).append((name, samples, wall))
        faster = compared = dc = ds = ""
        csvp = os.path.join(out, f"{name}.{tool}.csv")
        if tool == "lem":
            lem_wall, lem_rows = wall, table(csvp)
        elif lem_rows is not None:
            faster = f"{wall / lem_wall:.1f}×"
            peer = table(csvp)
            keys = lem_rows.keys() & peer.keys()
            compared = len(keys)
            dc = max((abs(num(lem_rows[k]["counter_j"]) - num(peer[k]["counter_j"])) for k in keys), default=float("nan"))
            ds = max((abs(num(lem_rows[k]["sampled_j"]) - num(peer[k]["sampled_j"])) / abs(num(peer[k]["sampled_j"]))
                      for k in keys if num(peer[k]["sampled_j"]) != 0), default=float("nan"))
            missing = len(lem_rows.keys() ^ peer.keys())
            compared = f"{compared}" + (f" ({missing} unmatched)" if missing else "")
            dc, ds = f"{dc:.4f}", f"{100 * ds:.5f} %"
        print(f"| {name} | {samples:,} | {names[tool]} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {samples / wall / 1e6:.2f} M | {faster} | {compared} | {dc} | {ds} |")
scaled = {tool: [x for x in xs if x[0] in ("1x", "4x", "16x")] for tool, xs in per_sample.items()}
if any(len(xs) > 1 for xs in scaled.values()):
    print("\nTime per sample across the scaled inputs (linear in samples when constant):")
    for tool, xs in scaled.items():
        if xs:
            print(f"- {names[tool]}: " + ", ".join(f"{n} {w:.1f} s = {1e9 * w / s:.0f} ns/sample" for n, s, w in xs))
