"""The pandas/pyarrow peer of `lem-analyze report TRACE -f csv` for the analyzer benchmark.

Reads a lem trace (Parquet) and prints, per run marked in it and per GPU, the counter energy (counter linearly
interpolated at the run's edges) and the 50 Hz energy (trapezoid over the power samples, edges interpolated), and
the same per phase, vectorised with numpy (running integrals, np.interp): the way an analyst would write it.

    python3 scripts/bench/energy_table.py TRACE > table.csv
"""
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def cumulative(t, p):
    """Running trapezoid integral (J) of power p (W) at times t (s)."""
    c = np.zeros(len(t))
    c[1:] = np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(t))
    return c


def integral_at(t, p, c, x):
    """Integral from t[0] to each x (within t's span), the last partial interval interpolated."""
    i = np.clip(np.searchsorted(t, x, side="right") - 1, 0, len(t) - 2)
    px = np.interp(x, t, p)
    return c[i] + (p[i] + px) / 2 * (x - t[i])


def main():
    df = pq.read_table(sys.argv[1], columns=["kind", "gpu", "time", "power_w", "energy_mj", "event", "run_id", "name"]).to_pandas()
    df["t"] = df["time"].astype("int64") / 1e9
    ev = df[df["kind"] == "event"]
    starts = ev[ev["event"] == "run_start"].set_index("run_id")
    ends = ev[ev["event"] == "run_end"].set_index("run_id")
    runs = starts[["t", "name"]].rename(columns={"t": "start", "name": "experiment"}).join(ends[["t"]].rename(columns={"t": "end"}))
    ph = ev[ev["event"].isin(["phase", "run_end"])].sort_values("t")
    ph = ph.assign(next_t=ph.groupby("run_id")["t"].shift(-1))
    ph = ph[(ph["event"] == "phase") & ph["next_t"].notna()]
    rows = []
    for g, d in df[df["kind"].isin(["sample", "counter"])].groupby("gpu"):
        s = d[d["kind"] == "sample"].sort_values("t")
        c = d[d["kind"] == "counter"].sort_values("t")
        st, sp = s["t"].to_numpy(), s["power_w"].to_numpy()
        ct, ce = c["t"].to_numpy(), c["energy_mj"].to_numpy(dtype=float) / 1000
        cum = cumulative(st, sp)
        a, b = runs["start"].to_numpy(), runs["end"].to_numpy()
        counter = np.interp(b, ct, ce) - np.interp(a, ct, ce)
        sampled = integral_at(st, sp, cum, b) - integral_at(st, sp, cum, a)
        out = pd.DataFrame({"run_id": runs.index, "experiment": runs["experiment"].to_numpy(), "gpu": g,
                            "duration_s": b - a, "counter_j": counter, "sampled_j": sampled})
        pa, pb = ph["t"].to_numpy(), ph["next_t"].to_numpy()
        phase_j = integral_at(st, sp, cum, pb) - integral_at(st, sp, cum, pa)
        per = pd.DataFrame({"run_id": ph["run_id"].to_numpy(), "phase": ph["name"].to_numpy(), "j": phase_j})
        wide = per.pivot_table(index="run_id", columns="phase", values="j", aggfunc="sum").add_prefix("phase_j_")
        rows.append(out.join(wide, on="run_id"))
    pd.concat(rows).sort_values(["run_id", "gpu"]).to_csv(sys.stdout, index=False, float_format="%.3f")


if __name__ == "__main__":
    main()
