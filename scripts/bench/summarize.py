# Summarises an exporter benchmark directory (see scripts/bench-exporter.sh) as a Markdown table.
import json, sys, datetime
import pandas as pd

d = sys.argv[1]
cpu = json.load(open(f"{d}/cpu.json"))
marks = {}
for line in open(f"{d}/gpuload.txt"):
    f = line.split()
    if f and f[0] == "MARK":
        marks[f[1]] = (int(f[2]), int(f[3].split("=")[1]))
t0, e0 = marks["idle1"]
t1, e1 = marks["end"]
truth = (e1 - e0) / 1000.0
dur = (t1 - t0) / 1e9

def trapz(ts_ns, watts, a, b):
    s = pd.Series(watts, index=pd.Index(ts_ns)).sort_index()
    s = s[~s.index.duplicated()]
    grid = s.index.union(pd.Index([a, b]))
    s = s.reindex(grid).interpolate(method="index").loc[a:b]
    x = s.index.to_numpy() / 1e9
    y = s.to_numpy()
    return float(((y[1:] + y[:-1]) / 2 * (x[1:] - x[:-1])).sum())

rows = []
# lem-exporter: the 50 Hz samples it captured (served back by its samples API as Parquet).
df = pd.read_parquet(f"{d}/exporter.parquet")
smp = df[df.kind == "sample"]
ts = smp.time.astype("int64").to_numpy()
lem_e = trapz(ts, smp.power_w.to_numpy(), t0, t1)
win = (ts >= cpu["start_ns"]) & (ts <= cpu["stop_ns"])
rows.append(("lem-exporter (defaults)", cpu["exporter"], int(win.sum()), int(win.sum()), lem_e))
# pynvml loop.
ts, mw = [], []
for line in open(f"{d}/pynvml.txt"):
    f = line.split()
    if len(f) >= 2:
        ts.append(int(f[0])); mw.append(float(f[1]))
py_e = trapz(ts, [x / 1000 for x in mw], t0, t1)
distinct = int((pd.Series(mw).diff() != 0).sum())
rows.append(("pynvml loop (field 186 at 50 Hz, counter at 10 Hz)", cpu["pynvml"], len(ts), distinct, py_e))
# nvidia-smi -lms 20.
ts, w = [], []
for line in open(f"{d}/nvidia-smi.csv"):
    f = [x.strip() for x in line.split(",")]
    if len(f) < 2:
        continue
    try:
        t = datetime.datetime.strptime(f[0], "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc)
        ts.append(int(t.timestamp() * 1e9)); w.append(float(f[1]))
    except ValueError:
        pass
smi_e = trapz(ts, w, t0, t1) if ts and ts[0] <= t0 and ts[-1] >= t1 else float("nan")
distinct = int((pd.Series(w).diff() != 0).sum())
rows.append(("nvidia-smi --query-gpu=power.draw -lms 20", cpu["nvidia_smi"], len(ts), distinct, smi_e))

span_min = (cpu["stop_ns"] - cpu["start_ns"]) / 60e9
print(f"window {span_min*60:.1f} s; gpuload.py {dur:.1f} s; energy counter over the gpuload run: {truth:.1f} J\n")
print("| tool | CPU s/min | % of a core | readings/min | distinct values/min | CPU ms per distinct value | energy over gpuload (J) | vs counter |")
print("|---|---|---|---|---|---|---|---|")
for name, cpu_s, n, nd, e in rows:
    per_min = cpu_s / span_min
    print(f"| {name} | {per_min:.2f} | {100*per_min/60:.2f} % | {n/span_min:.0f} | {nd/span_min:.0f} | "
          f"{1000*cpu_s/max(nd,1):.3f} | {e:.1f} | {100*(e/truth-1):+.2f} % |")
