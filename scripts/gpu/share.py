#!/usr/bin/env python3
"""Validation of lem's per-process energy attribution on a GPU that several processes share.

Three known workloads, each its own process with its own CUDA context:

  heavy   compute-bound: bf16 8192 x 8192 matrix products on the tensor cores (unit: one product)
  memory  memory-bound: y += a x over two 1 GiB vectors, HBM streaming (unit: one pass)
  gen     a small random-init decoder-only transformer generating tokens (unit: one token of the batch)

run alone, then two (heavy + memory) and three (all) at once, time-sharing one GPU (~2.5 min with the defaults).
Each workload counts the units it finished inside each phase's window, so its solo energy per unit times the
units it did while sharing is what its shared work would have cost alone. The analysis compares that with the
energy lem attributed to it while sharing, and prints a table.

Under lem-run record (process mode); the trace has the per-process data:

  lem-run record -o share.parquet -- python3 scripts/gpu/share.py run --out share-run.json
  lem-analyze processes --json share.parquet > share-processes.json
  python3 scripts/gpu/share.py analyze share-run.json share-processes.json

Beside lem-exporter (the exporter's running per-process totals are read at each phase's edges):

  python3 scripts/gpu/share.py run --exporter http://127.0.0.1:9636 --out share-run.json
  python3 scripts/gpu/share.py analyze share-run.json

--mps runs the sharers under an MPS daemon started as this user (nvidia-cuda-mps-control -d, with its pipe and
log directories in a temporary folder); it never changes the GPU's compute mode. Seen on H200 (driver 580): under
MPS the driver reports per-process utilization for the MPS server only, so lem charges the server, and the
analysis lists it among the processes that are no workload. Standard library and torch only.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

KINDS = ("heavy", "memory", "gen")
PHASES = (
    ("solo_heavy", ("heavy",)),
    ("solo_memory", ("memory",)),
    ("solo_gen", ("gen",)),
    ("shared2", ("heavy", "memory")),
    ("shared3", ("heavy", "memory", "gen")),
)
SETTLE = 3.0  # s the workers hold their contexts idle before a phase, and the exporter is given after it


def log(*a):
    print("share:", *a, file=sys.stderr, flush=True)


def marker(name):
    # lem-run turns these lines into phase events; flushed at once, or the phases' times would be wrong.
    print(f"LEM_PHASE {name}", flush=True)


# ---------------------------------------------------------------- workers (one process each)


def make_work(kind, torch):
    """Returns step() -> units done (synchronous) and the unit's name."""
    dev = "cuda"
    if kind == "heavy":
        n = 8192
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn_like(a)

        def step():
            for _ in range(4):
                a @ b
            torch.cuda.synchronize()
            return 4

        return step, "matmul"
    if kind == "memory":
        n = 256 * 2**20  # 1 GiB of float32 each
        x = torch.randn(n, device=dev)
        y = torch.zeros(n, device=dev)

        def step():
            for _ in range(8):
                y.add_(x, alpha=1e-3)  # reads 2 GiB, writes 1 GiB
            torch.cuda.synchronize()
            return 8

        return step, "pass"
    if kind == "gen":
        torch.manual_seed(0)
        d, layers, heads, vocab, batch, prompt, new = 1024, 8, 16, 32000, 16, 128, 16
        dt = torch.bfloat16
        emb = torch.nn.Embedding(vocab, d).to(dev, dt)
        layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        body = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False).to(dev, dt).eval()
        head = torch.nn.Linear(d, vocab).to(dev, dt)

        @torch.inference_mode()
        def step():
            ids = torch.randint(vocab, (batch, prompt), device=dev)
            for _ in range(new):
                n = ids.shape[1]
                mask = torch.nn.Transformer.generate_square_subsequent_mask(n, device=dev, dtype=dt)
                h = body(emb(ids), mask=mask, is_causal=True)
                ids = torch.cat([ids, head(h[:, -1]).argmax(-1, keepdim=True)], 1)
            torch.cuda.synchronize()
            return batch * new

        return step, "token"
    raise SystemExit(f"unknown workload {kind!r}: one of {', '.join(KINDS)}")


def worker(args):
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("share worker: no CUDA device visible")
    step, unit = make_work(args.kind, torch)
    t = time.time()
    for _ in range(3):  # warm-up: kernels chosen, memory allocated
        step()
    warm = time.time() - t
    open(args.ready, "w").close()
    while not os.path.exists(args.go):  # the barrier: every sharer warm before the phase starts
        time.sleep(0.01)
    with open(args.go) as f:
        start, seconds = (float(v) for v in f.read().split())
    time.sleep(max(0.0, start - time.time()))
    end = start + seconds
    units, t0 = 0, time.time()
    while True:
        done = step()
        if time.time() > end:
            break  # finished after the window: not counted, its energy is outside the phase
        units += done
    with open(args.out, "w") as f:
        json.dump({"kind": args.kind, "pid": os.getpid(), "unit": unit, "units": units, "start": t0, "end": end,
                   "warmup_s": warm}, f)


# ---------------------------------------------------------------- exporter


SERIES = re.compile(r'^lem_process_gpu_energy_joules_total\{([^}]*)\}\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url, gpu):
    """The exporter's per-process energy totals of one GPU: {pid label: joules}, and when it was read."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(1)))
        if labels.get("gpu") == str(gpu):
            out[labels["pid"]] = float(m.group(2))
    return {"time": time.time(), "joules": out}


# ---------------------------------------------------------------- orchestration


class MPS:
    """An MPS daemon of this user's, in a temporary folder; the GPU's compute mode stays as it is."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="share-mps-")
        self.env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=os.path.join(self.dir, "pipe"),
                        CUDA_MPS_LOG_DIRECTORY=os.path.join(self.dir, "log"))
        for d in ("pipe", "log"):
            os.makedirs(os.path.join(self.dir, d))
        r = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"share: nvidia-cuda-mps-control -d failed ({r.returncode}): {r.stderr.strip()}")
        log("MPS daemon started, pipes in", self.dir)

    def stop(self):
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", env=self.env, text=True, capture_output=True)
        log("MPS daemon stopped")


def run_phase(name, kinds, args, env, tmp, record):
    marker(f"{name}_warmup")
    go = os.path.join(tmp, f"{name}.go")
    procs = []
    for k in kinds:
        ready, out = os.path.join(tmp, f"{name}.{k}.ready"), os.path.join(tmp, f"{name}.{k}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "worker", k, "--ready", ready, "--go", go, "--out", out]
        procs.append((k, out, ready, subprocess.Popen(cmd, env=env)))
    deadline = time.time() + args.warmup_timeout
    while not all(os.path.exists(r) for _, _, r, _ in procs):
        if any(p.poll() is not None for *_, p in procs) or time.time() > deadline:
            for *_, p in procs:
                p.kill()
            raise SystemExit(f"share: a worker of {name} failed or did not warm up in {args.warmup_timeout:.0f} s")
        time.sleep(0.05)
    start = time.time() + SETTLE
    with open(go + ".tmp", "w") as f:
        f.write(f"{start} {args.seconds}")
    os.rename(go + ".tmp", go)
    time.sleep(max(0.0, start - time.time()))
    phase = {"name": name, "kinds": list(kinds), "start": start, "end": start + args.seconds}
    if args.exporter:
        phase["scrape_start"] = scrape(args.exporter, args.gpu)
    marker(name)
    time.sleep(max(0.0, phase["end"] - time.time()))
    marker(f"{name}_exit")
    for k, out, _, p in procs:
        if p.wait() != 0:
            raise SystemExit(f"share: worker {k} of {name} exited {p.returncode}")
    phase["workers"] = []
    for k, out, _, p in procs:
        with open(out) as f:
            phase["workers"].append(json.load(f))
    if args.exporter:
        time.sleep(SETTLE + 1)  # the exporter settles an interval once the process data covering it is polled
        phase["scrape_end"] = scrape(args.exporter, args.gpu)
    record["phases"].append(phase)
    log(name, ", ".join(f"{w['kind']} pid {w['pid']}: {w['units']} x {w['unit']}" for w in phase["workers"]))


def run(args):
    env = dict(os.environ, CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=str(args.gpu), PYTHONUNBUFFERED="1")
    record = {"gpu": args.gpu, "seconds": args.seconds, "mps": args.mps, "exporter": args.exporter, "pid": os.getpid(),
              "phases": []}
    mps = MPS() if args.mps else None
    if mps:
        env.update({k: mps.env[k] for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")})
    tmp = tempfile.mkdtemp(prefix="share-")
    try:
        # Idle first, with no context on the GPU: the trace's idle power (this process never touches CUDA).
        marker("idle")
        record["idle"] = {"start": time.time(), "end": time.time() + args.idle}
        if args.exporter:
            record["idle"]["scrape_start"] = scrape(args.exporter, args.gpu)
        time.sleep(args.idle)
        if args.exporter:
            record["idle"]["scrape_end"] = scrape(args.exporter, args.gpu)
        phases = [p for p in PHASES if not args.phases or p[0] in args.phases]
        for name, kinds in phases:
            run_phase(name, kinds, args, env, tmp, record)
        marker("done")
    finally:
        if mps:
            mps.stop()
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
        log("wrote", args.out)


# ---------------------------------------------------------------- analysis


def attributed(record, procs):
    """{phase name: ({pid: J}, unattributed J, idle W)} from lem-analyze processes --json, or from the exporter's
    totals read at each phase's edges."""
    out = {}
    if procs is not None:
        for p in procs["phases"]:
            if p["name"] in out:
                continue
            for g in p["gpus"] or []:  # a phase with no process on the GPU has none
                if g["index"] == record["gpu"]:
                    out[p["name"]] = ({str(x["pid"]): x["energy_j"] for x in g["processes"]},
                                      g["unattributed_j"], g["idle_w"])
        return out
    for ph in record["phases"]:
        a, b = ph.get("scrape_start"), ph.get("scrape_end")
        if not a or not b:
            raise SystemExit("share: no per-process data: give the output of `lem-analyze processes --json`, or run "
                             "with --exporter")
        d = {pid: j - a["joules"].get(pid, 0.0) for pid, j in b["joules"].items()}
        out[ph["name"]] = ({pid: j for pid, j in d.items() if pid not in ("idle", "unattributed", "other")},
                           d.get("unattributed", 0.0) + d.get("other", 0.0), None)
    return out


def analyze(args):
    with open(args.run) as f:
        record = json.load(f)
    procs = None
    if args.processes:
        with open(args.processes) as f:
            procs = json.load(f)
    att = attributed(record, procs)
    solo = {}  # kind -> J per unit, alone
    rows, missing = [], []
    for ph in record["phases"]:
        split = att.get(ph["name"])
        if split is None:
            missing.append(ph["name"])
            continue
        by_pid, unattributed, idle_w = split
        for w in ph["workers"]:
            j = by_pid.get(str(w["pid"]))
            if j is None:
                missing.append(f"{ph['name']}/{w['kind']} (pid {w['pid']})")
                continue
            rows.append((ph["name"], w, j, unattributed, idle_w))
            if len(ph["workers"]) == 1 and w["units"] > 0:
                solo[w["kind"]] = j / w["units"]
    print(f"GPU {record['gpu']}, {record['seconds']:.0f} s a phase{', MPS' if record.get('mps') else ''}")
    print()
    print("| phase | workload | units done | attributed J | J/unit | alone: J/unit x units | attributed / alone |")
    print("|---|---|---|---|---|---|---|")
    totals = {}
    for name, w, j, unattributed, idle_w in rows:
        per = j / w["units"] if w["units"] else float("nan")
        alone = solo.get(w["kind"], float("nan")) * w["units"]
        t = totals.setdefault(name, [0.0, 0.0, unattributed])
        t[0] += j
        t[1] += alone
        ratio = j / alone if alone else float("nan")
        print(f"| {name} | {w['kind']} | {w['units']} x {w['unit']} | {j:.1f} | {per:.4g} | {alone:.1f} | {ratio:.3f} |")
    print()
    print("| phase | attributed J (all workloads) | alone J for the same work | ratio | unattributed J |")
    print("|---|---|---|---|---|")
    for name, (j, alone, unattributed) in totals.items():
        ratio = j / alone if alone else float("nan")
        print(f"| {name} | {j:.1f} | {alone:.1f} | {ratio:.3f} | {unattributed:.1f} |")
    # The whole GPU's work, whoever was charged (under MPS the server takes it all): every process's charge in a
    # phase against what its workers' units cost alone, at the solo phases' cost per unit charged to anyone.
    whole, solo_any = {}, {}
    for ph in record["phases"]:
        split = att.get(ph["name"])
        if split is None:
            continue
        whole[ph["name"]] = sum(split[0].values())
        if len(ph["workers"]) == 1 and ph["workers"][0]["units"] > 0:
            solo_any[ph["workers"][0]["kind"]] = whole[ph["name"]] / ph["workers"][0]["units"]
    shared = [ph for ph in record["phases"] if len(ph["workers"]) > 1 and ph["name"] in whole]
    if shared and all(w["kind"] in solo_any for ph in shared for w in ph["workers"]):
        print()
        print("| phase | charged to every process J | the same work alone J | ratio |")
        print("|---|---|---|---|")
        for ph in shared:
            alone = sum(solo_any[w["kind"]] * w["units"] for w in ph["workers"])
            print(f"| {ph['name']} | {whole[ph['name']]:.1f} | {alone:.1f} | {whole[ph['name']] / alone:.3f} |")
    others = []  # processes charged in a phase that are none of its workloads (the MPS server, a stranger)
    for ph in record["phases"]:
        split = att.get(ph["name"])
        if split:
            mine = {str(w["pid"]) for w in ph["workers"]}
            others += [f"{ph['name']}: pid {pid} {j:.1f} J" for pid, j in split[0].items() if pid not in mine and j > 0]
    if others:
        print()
        print("charged, but no workload:", "; ".join(others))
        if record.get("mps"):
            print("(under MPS the driver reports utilization for the MPS server only: lem charges the server)")
    if missing:
        print()
        print("no attribution found for:", ", ".join(missing))
    print()
    print("attributed / alone: 1 means the workload was charged exactly what its work cost alone. The total ratio says")
    print("whether sharing made the work as a whole cheaper or dearer; a workload's ratio above the total's means it")
    print("was charged some of its neighbours' energy (busy time is shared by time, not by the power it draws).")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the phases (under lem-run record, or beside lem-exporter)")
    r.add_argument("--gpu", type=int, default=0, help="GPU index (nvidia-smi's, as lem numbers them)")
    r.add_argument("--seconds", type=float, default=20, help="length of each phase")
    r.add_argument("--idle", type=float, default=10, help="idle time first, no context on the GPU")
    r.add_argument("--phases", nargs="*", help="only these phases (" + ", ".join(n for n, _ in PHASES) + ")")
    r.add_argument("--exporter", help="lem-exporter URL: read its per-process totals at each phase's edges")
    r.add_argument("--mps", action="store_true", help="share the GPU through an MPS daemon started as this user")
    r.add_argument("--warmup-timeout", type=float, default=180)
    r.add_argument("--out", default="share-run.json")
    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("kind", choices=KINDS)
    w.add_argument("--ready", required=True)
    w.add_argument("--go", required=True)
    w.add_argument("--out", required=True)
    a = sub.add_parser("analyze", help="compare attributed energy with solo energy for the same work")
    a.add_argument("run", help="the run's record (share-run.json)")
    a.add_argument("processes", nargs="?", help="lem-analyze processes --json of the recording")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    {"run": run, "worker": worker, "analyze": analyze}[args.cmd](args)


if __name__ == "__main__":
    main()
