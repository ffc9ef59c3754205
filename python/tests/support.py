"""What the tests share: the built lem binaries, a real lem-exporter replaying a real H200 recording, and Python
workloads run as their own processes (each with the lem package, as a user's script would have it)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(PYTHON_DIR)
TRACE = os.path.join(ROOT, "testdata", "traces", "h200-llm.parquet")
WORKLOADS = os.path.join(HERE, "workloads")
# The recording's one GPU.
RECORDED_UUID = "GPU-h200-recording"


def require_services():
    return os.environ.get("LEM_REQUIRE_SERVICES") == "1"


def binary(name):
    """Path of a built lem binary ($LEM_BIN, else the repository's bin/); a missing one skips the test, or fails it
    under LEM_REQUIRE_SERVICES=1 (make test)."""
    d = os.environ.get("LEM_BIN") or os.path.join(ROOT, "bin")
    p = os.path.join(d, name)
    if not os.access(p, os.X_OK):
        why = "%s is not built (make build, or LEM_BIN=DIR)" % p
        if require_services():
            raise AssertionError("required binary missing: " + why)
        raise unittest.SkipTest("SKIPPED (make test requires it): " + why)
    return p


def clean_env(**extra):
    """The environment for a child: no marker settings inherited from the test's own environment (lem's commands
    read LEM_* variables as flags), the lem package importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEM_") and k != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = PYTHON_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def closed_port():
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Exporter:
    """bin/lem-exporter replaying the H200 LLM recording on a loopback port, recording to a directory."""

    def __init__(self, replay_from="30s", record=True, extra=()):
        self.dir = tempfile.mkdtemp(prefix="lem-py-exporter-")
        self.record_dir = os.path.join(self.dir, "rec") if record else None
        self.log_path = os.path.join(self.dir, "exporter.log")
        args = [binary("lem-exporter"), "--replay", TRACE, "--replay-from", replay_from,
                "--web.listen-address", "127.0.0.1:0", "--log.format", "json"]
        if record:
            args += ["--record.dir", self.record_dir, "--record.flush-interval", "1s"]
        args += list(extra)
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=clean_env())
        self.addr = self._address()
        self.url = "http://" + self.addr

    def _address(self):
        # The exporter logs the address it bound; read it rather than guess a free port.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("lem-exporter exited (%d): %s" % (self.proc.returncode, self.output()))
            for line in self.output().splitlines():
                m = re.search(r'"address":"(127\.0\.0\.1:\d+)"', line)
                if m and "Listening on" in line:
                    return m.group(1)
            time.sleep(0.05)
        raise AssertionError("lem-exporter did not listen within 20 s: " + self.output())

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def get(self, path):
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=15) as r:
            return json.loads(r.read())

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_py(script, args=(), env=None, timeout=120, stdin=None):
    """Runs a workload script (tests/workloads/NAME.py) with the lem package; returns the CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(WORKLOADS, script)] + list(args), env=env or clean_env(),
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def analyze(paths):
    """lem-analyze report -f json of paths: {run_id: manifest}."""
    out = subprocess.run([binary("lem-analyze"), "report", "-f", "json"] + list(paths), capture_output=True, text=True,
                         env=clean_env(), timeout=120)
    if out.returncode != 0:
        raise AssertionError("lem-analyze report: %s" % out.stderr)
    return {r["manifest"]["run_id"]: r["manifest"] for r in json.loads(out.stdout)["runs"]}


def windows_by_name(manifest):
    return {w["name"]: w for w in manifest.get("windows") or []}


def unstamp(lines, t0_ns, t1_ns):
    """Marker lines without their own time: each LEM_ line carries exactly one at=<Unix seconds to the ns>, in
    order and between t0_ns and t1_ns (the child's start and end); returns the lines without it and the times."""
    out, times = [], []
    for line in lines:
        if not line.startswith("LEM_"):
            out.append(line)
            continue
        fields = line.split(" ")
        stamps = [f for f in fields if f.startswith("at=")]
        if len(stamps) != 1:
            raise AssertionError("marker line %r: want one at=<time>, got %d" % (line, len(stamps)))
        sec, _, frac = stamps[0][3:].partition(".")
        if len(frac) != 9 or not (sec + frac).isdigit():
            raise AssertionError("marker line %r: at= is not Unix seconds with 9 decimals" % line)
        ns = int(sec) * 10 ** 9 + int(frac)
        if not t0_ns <= ns <= t1_ns or (times and ns < times[-1]):
            raise AssertionError("marker line %r: time %d not in order within [%d, %d]" % (line, ns, t0_ns, t1_ns))
        times.append(ns)
        out.append(" ".join(f for f in fields if not f.startswith("at=")))
    return out, times


def lem_lines(stderr):
    """The lem package's log lines in a child's stderr (Python's last-resort handler prints the bare message)."""
    return [l for l in stderr.splitlines() if l.startswith("lem") and ":" in l.split()[0]]


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def quantile(xs, p):
    """Linear interpolation between order statistics (numpy's default, the manifest's p90)."""
    s = sorted(xs)
    h = p * (len(s) - 1)
    lo = int(h)
    if lo >= len(s) - 1:
        return s[-1]
    return s[lo] + (h - lo) * (s[lo + 1] - s[lo])


# The tests import the lem package from this checkout, as the workloads do through PYTHONPATH.
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)
