"""Runs one command and prints its wall time and peak resident memory (its own and its children's) as JSON.

    python3 scripts/bench/measure.py OUT.csv -- CMD ARGS...
"""
import json
import resource
import subprocess
import sys
import time

out, cmd = sys.argv[1], sys.argv[sys.argv.index("--") + 1:]
t0 = time.perf_counter()
with open(out, "w") as f:
    rc = subprocess.run(cmd, stdout=f).returncode
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"cmd": " ".join(cmd), "rc": rc, "wall_s": round(wall, 3), "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
                  "cpu_s": round(ru.ru_utime + ru.ru_stime, 2)}))
