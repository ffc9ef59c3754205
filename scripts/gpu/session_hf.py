"""Summarises the GPU session's HF runs (standard library only): the run with markers through the Python client
against the run with stdout markers (same model, batch and rounds), and the 100-call run's energy per
generate() call. Usage: python3 scripts/gpu/session_hf.py RUNS_DIR"""
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


def phases(m):
    return {p["name"]: p for p in m.get("phases", [])}


def num(v, fmt="{:.1f}"):
    return "—" if v is None else fmt.format(v)


def main():
    ms = manifests(sys.argv[1])
    client, stdout = ms.get("hf-bs8-client"), ms.get("hf-bs8-stdout")
    if client and stdout:
        print("| run | markers | phases | prefill s | prefill J | decode s | decode J | J/token decode | run J | active idle W |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, m in (("client", client), ("stdout", stdout)):
            ph = phases(m)
            pre, dec = ph.get("prefill", {}), ph.get("decode", {})
            tok = (m.get("derived") or {}).get("output_tokens")
            act = [g["active_idle"]["median_w"] for g in m["gpus"] if g.get("active_idle") and g["role"] == "workload"]
            dj = (dec.get("energy") or {}).get("hybrid_j")
            print(f"| {m['run_id']} | {name} ({m['markers'].get('http', 0)} over HTTP, {m['markers'].get('parsed', 0)} lines) "
                  f"| {len(m.get('phases', []))} | {num(pre.get('duration_s'), '{:.3f}')} | {num((pre.get('energy') or {}).get('hybrid_j'))} "
                  f"| {num(dec.get('duration_s'), '{:.3f}')} | {num(dj)} | {num(dj / tok if dj and tok else None, '{:.4f}')} "
                  f"| {num(m['energy'].get('hybrid_j'))} | {num(act[0] if act else None)} |")
        for name in ("prefill", "decode"):
            a, b = phases(client).get(name), phases(stdout).get(name)
            if a and b:
                ea, eb = a["energy"]["hybrid_j"], b["energy"]["hybrid_j"]
                print(f"\n{name}: client {a['count']} × / stdout {b['count']} ×; duration {a['duration_s']:.3f} vs "
                      f"{b['duration_s']:.3f} s ({1000 * (a['duration_s'] - b['duration_s']):+.0f} ms); energy "
                      f"{ea:.1f} vs {eb:.1f} J ({100 * (ea - eb) / eb:+.2f} %: two runs, so this includes run-to-run spread)")
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
