#!/usr/bin/env python3
"""GPU characterisation workload for lem's precision: square-wave loads and known-energy bursts.

Needs python3 with torch on a CUDA GPU; nothing else (no Go, no Docker on the GPU host: bring the lem-run binary).
About 3.5 minutes of GPU time with the defaults (--quick: about 40 s, for a smoke test).

Run it under lem-run, counter read every 100 ms so the analysis can thin the reads to any sparser cadence:

    PYTHONUNBUFFERED=1 lem-run --experiment precision --gpus 0 --baseline 20s --counter-interval 100ms \\
        --out runs -- python3 scripts/gpu/precision.py

then, anywhere lem-analyze runs (no GPU needed), turn the run directory into the tables:

    lem-analyze precision runs/precision-*            # Markdown; -f json for the numbers

What it does, with the markers lem reads from its stdout (docs/MANIFEST.md, "Workload markers" and "Windows"):

1. warmup (3 s, full load): clocks and temperature up.
2. Square waves: for each period in 4–400 ms and duty cycle 25/50/75 %, about 4 s of matmuls switched on for
   duty × period and off for the rest, on an absolute schedule (no drift): one phase each,
   LEM_PHASE sq_p<period>ms_d<duty>. The analysis compares per phase the 50 Hz integral, the counter, the hybrid
   and the 1 s-average power against the counter (aliasing of loads commensurate with the 20 ms sampling).
3. idle (3 s, context held, nothing running): LEM_WINDOW_BEGIN/END idle, lem's active idle.
4. Known-energy bursts: for each length 10, 20, 50, 100, 200 ms, --bursts of N identical matmul kernels
   back to back (N = length / one kernel's time, measured at start), each a window
   LEM_WINDOW_BEGIN burst_<length>ms id=<k> ... LEM_WINDOW_END burst_<length>ms id=<k> kernels=<N> burst_us=<measured>,
   separated by idle gaps of 0.8–1.4 s at random (so bursts fall anywhere on the counter's 100 ms update grid).
   The analysis gives per length the per-burst energy above idle (mean, spread), the per-kernel energy against
   the longest bursts', at the native counter cadence and thinned to 0.5, 1 and 2 s, and from the samples alone.

Markers are printed with flush; times are lem-run's (it stamps each line as it reads it).
"""
import argparse
import random
import sys
import time

import torch


def mark(line):
    print(line, flush=True)


def busy_until(t):
    # Spin rather than sleep: sleep overshoots by tens of microseconds to milliseconds, a 1 ms off-time would smear.
    while time.perf_counter() < t:
        pass


def kernel_time(a, b, reps=50):
    torch.cuda.synchronize()
    for _ in range(5):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def make_kernel(device, dtype, target_s):
    """Square matrices sized so one matmul takes about target_s; returns (a, b, seconds per kernel)."""
    n = 1024
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        t = kernel_time(a, b)
        if t >= target_s * 0.7 or n >= 16384:
            return a, b, t
        n = min(16384, int(n * max(1.25, (target_s / t) ** (1 / 3))) // 256 * 256)


def square(a, b, period_s, duty, seconds):
    """Matmuls on for duty × period, off for the rest, every period, for about seconds."""
    t0 = time.perf_counter()
    k = 0
    while True:
        start = t0 + k * period_s
        if start - t0 >= seconds:
            break
        on_end = start + duty * period_s
        busy_until(start)
        while time.perf_counter() < on_end:
            torch.matmul(a, b)
            torch.cuda.synchronize()
        k += 1
    busy_until(t0 + k * period_s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--periods-ms", default="4,6,8,10,14,20,26,40,100,200,400")
    p.add_argument("--duties", default="25,50,75")
    p.add_argument("--square-seconds", type=float, default=4.0)
    p.add_argument("--burst-ms", default="10,20,50,100,200")
    p.add_argument("--bursts", type=int, default=12, help="bursts per length")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a smoke test: few configurations, short phases")
    args = p.parse_args()
    if args.quick:
        args.periods_ms, args.duties, args.square_seconds, args.bursts = "10,40", "50", 1.5, 3
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    torch.cuda.set_device(device)
    rnd = random.Random(args.seed)

    # Square waves switch at up to 1 ms granularity: ~0.25 ms kernels. Bursts: ~1 ms kernels, N of them.
    sa, sb, st = make_kernel(device, dtype, 0.25e-3)
    ba, bb, bt = make_kernel(device, dtype, 1e-3)
    print(f"square kernel {sa.shape[0]}² {st * 1e3:.3f} ms, burst kernel {ba.shape[0]}² {bt * 1e3:.3f} ms", file=sys.stderr)

    mark("LEM_PHASE warmup")
    t_end = time.perf_counter() + (1.0 if args.quick else 3.0)
    while time.perf_counter() < t_end:
        torch.matmul(ba, bb)
        torch.cuda.synchronize()  # the phase ends when its work does, not a queue of launches later

    for period in [float(x) for x in args.periods_ms.split(",")]:
        for duty in [int(x) for x in args.duties.split(",")]:
            mark(f"LEM_PHASE sq_p{period:g}ms_d{duty}")
            square(sa, sb, period / 1e3, duty / 100, args.square_seconds)

    mark("LEM_PHASE idle")
    mark("LEM_WINDOW_BEGIN idle")
    time.sleep(1.0 if args.quick else 3.0)
    mark("LEM_WINDOW_END idle")

    mark("LEM_PHASE bursts")
    lengths = [float(x) for x in args.burst_ms.split(",")]
    plan = [(length, i) for length in lengths for i in range(args.bursts)]
    rnd.shuffle(plan)  # lengths interleaved: a drift in idle power does not favour one
    for length, i in plan:
        n = max(1, round(length / 1e3 / bt))
        # Gaps of at least 0.8 s: the analysis reads idle power over 0.3 s ending 0.15 s before a burst, and
        # counts the 0.25 s after the one before as part of that one.
        time.sleep(rnd.uniform(0.8, 1.4))
        name = f"burst_{length:g}ms"
        mark(f"LEM_WINDOW_BEGIN {name} id={i}")
        t0 = time.perf_counter()
        for _ in range(n):
            torch.matmul(ba, bb)
        torch.cuda.synchronize()
        took = time.perf_counter() - t0
        mark(f"LEM_WINDOW_END {name} id={i} kernels={n} burst_us={took * 1e6:.0f}")
    time.sleep(1.0)
    mark("LEM_PHASE end")
    time.sleep(1.0)


if __name__ == "__main__":
    main()
