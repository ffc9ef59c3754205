"""Summarises the GPU session's 100-call HF run (standard library only): the energy per generate() call, as lem
accounted it and as the workload read it back while running. (The two marker paths on one run:
scripts/gpu/markers_both.py.) Usage: python3 scripts/gpu/session_hf.py RUNS_DIR"""
import glob
import json
import os
import statistics
import sys


def manifests(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*", "manifest.json"))):
        with open(f) as fh:
            m = json.load(fh)
        out[m["experiment"]] = m
    return out


def num(v, fmt="{:.1f}"):
    return "—" if v is None else fmt.format(v)


def main():
    ms = manifests(sys.argv[1])
    calls = ms.get("hf-100-calls")
    if calls:
        ws = [w for w in calls.get("windows", []) if w["name"] == "generate"]
        if ws:
            w = ws[0]
            tok = (calls.get("derived") or {}).get("output_tokens") or 0
            print(f"\n{w['count']} generate() calls (batch 1, {tok / w['count']:.0f} new tokens each): {w['count']} windows, "
                  f"{w['duration_s']:.2f} s, {w['energy']['hybrid_j']:.1f} J in all; per call median "
                  f"{num(w.get('median_j'), '{:.2f}')} J, p90 {num(w.get('p90_j'), '{:.2f}')} J; "
                  f"mean {w['energy']['hybrid_j'] / w['count']:.2f} J")
        # The client printed each round's energy (counter-exact answers from lem-run's marker server).
        log = os.path.join(os.environ.get("LEM_SESSION_DIR", os.path.dirname(sys.argv[1].rstrip("/"))), "hf.log")
        if os.path.exists(log):
            js = []
            with open(log) as fh:
                for line in fh:
                    if line.startswith("round ") and " J, " in line:
                        js.append(float(line.split(",")[1].split()[0]))
            js = js[-100:]
            if len(js) >= 10:
                js.sort()
                print(f"as the workload read them while it ran ({len(js)} calls): median {statistics.median(js):.2f} J, "
                      f"p10 {js[len(js) // 10]:.2f} J, p90 {js[9 * len(js) // 10]:.2f} J, min {js[0]:.2f}, max {js[-1]:.2f}, "
                      f"CV {100 * statistics.pstdev(js) / statistics.mean(js):.1f} %")


if __name__ == "__main__":
    main()
