#!/usr/bin/env python3
"""Compares the two marker paths on one run of `examples/hf/generate.py --markers both`: the prefill and decode
phases posted over HTTP by lem's Python client against the stdout windows of the same names printed at the same
edges just after. Per occurrence, each edge's offset (stdout − HTTP, ms; a 50 Hz sample is 20 ms) from the trace's
events, and per name the energies lem accounted for each (manifest: phases and windows, raw and adjusted).

Needs pyarrow (the GPU hosts' python3 has it). Usage: python3 scripts/gpu/markers_both.py RUN_DIR"""
import json
import os
import sys



def events(run_dir):
    """(seconds, event, name) of the trace's events, in time order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    t = pq.read_table(os.path.join(run_dir, "trace.parquet"), columns=["kind", "time", "event", "name"])
    t = t.filter(pc.equal(t.column("kind"), "event"))
    ns = pc.cast(t.column("time"), "int64").to_pylist()
    return sorted(zip((x / 1e9 for x in ns), t.column("event").to_pylist(), t.column("name").to_pylist()),
                  key=lambda r: r[0])


def edges(rows):
    """The prefill and decode phases' and stdout windows' (start, end) in seconds, in order."""
    phases, windows = {"prefill": [], "decode": []}, {"prefill": [], "decode": []}
    open_phase, open_win = None, {}
    for ns, ev, name in rows:
        if ev in ("phase", "phase_end", "run_end") and open_phase is not None:
            phases[open_phase[0]].append((open_phase[1], ns))
            open_phase = None
        if ev == "phase" and name in phases:
            open_phase = (name, ns)
        if ev == "window_begin" and name in windows:
            open_win[name] = ns
        if ev == "window_end" and name in open_win:
            windows[name].append((open_win.pop(name), ns))
    return phases, windows


def main():
    run_dir = sys.argv[1]
    with open(os.path.join(run_dir, "manifest.json")) as f:
        m = json.load(f)
    phases, windows = edges(events(run_dir))
    print("| edge | occurrences | stdout − HTTP, ms: median | min | max | within one 20 ms sample |")
    print("|---|---|---|---|---|---|")
    for name in ("prefill", "decode"):
        p, w = phases[name], windows[name]
        n = min(len(p), len(w))
        for i, edge in ((0, "start"), (1, "end")):
            d = sorted(1000 * (w[k][i] - p[k][i]) for k in range(n))
            if d:
                print(f"| {name} {edge} | {n} (HTTP {len(p)}, stdout {len(w)}) | {d[len(d) // 2]:.2f} | {d[0]:.2f} | "
                      f"{d[-1]:.2f} | {sum(abs(x) < 20 for x in d)} of {n} |")
    ph = {x["name"]: x for x in m.get("phases", [])}
    wi = {x["name"]: x for x in m.get("windows", [])}
    print("\n| name | HTTP phase s | stdout window s | HTTP J (hybrid) | stdout J (hybrid) | difference | adjusted J HTTP / stdout |")
    print("|---|---|---|---|---|---|---|")
    for name in ("prefill", "decode"):
        a, b = ph.get(name), wi.get(name)
        if not a or not b:
            print(f"| {name} | missing: phase {bool(a)}, window {bool(b)} | | | | | |")
            continue
        ea, eb = a["energy"]["hybrid_j"], b["energy"]["hybrid_j"]
        print(f"| {name} ({a['count']} / {b['count']}) | {a['duration_s']:.4f} | {b['duration_s']:.4f} | {ea:.2f} | "
              f"{eb:.2f} | {100 * (eb - ea) / ea:+.3f} % | {a['energy'].get('adjusted_j') or 0:.2f} / "
              f"{b['energy'].get('adjusted_j') or 0:.2f} |")


if __name__ == "__main__":
    main()
