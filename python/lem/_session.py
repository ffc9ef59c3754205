"""The process's one marker session: where markers go (lem-run's server, a lem-exporter, stdout, or nowhere), the
ordered background sender, the run this process owns when it talks to an exporter on its own, and window energies.

Every marker carries its own time ("at", taken in the caller's thread when the call is made), so a marker that
waits in the queue behind others still marks the instant the workload reached it. Markers are sent by one daemon
thread in the order they were made; the workload never waits for the network and never sees a network error
(the first one is logged once)."""

import atexit
import logging
import os
import queue
import re
import sys
import threading
import time
import urllib.parse

from . import _grammar as grammar
from . import prom
from ._transport import NETWORK_ERRORS, Endpoint, Rejected, redact

log = logging.getLogger("lem")

DEFAULT_EXPORTER = "http://127.0.0.1:9636"
# lem-exporter reads the energy counter every 2 s by default and an answer is counter-exact once a reading 250 ms
# past the interval's end is in: 5 s covers that with room; lem-run reads every second.
DEFAULT_WAIT_S = 5.0
MAX_WAIT_S = 10.0  # the server's bound
DEFAULT_LEASE_S = 30.0
QUEUE_MAX = 1 << 16
POST_TIMEOUT_S = 5.0
EXIT_FLUSH_S = 5.0
PROBE_TIMEOUT_S = 1.0

_RUN_URL = re.compile(r"^(.*)/api/v1/runs/([^/]+)/?$")


def rfc3339(ns):
    """Unix nanoseconds as RFC 3339 UTC with nanoseconds (a float of seconds would lose the last digits)."""
    s, frac = divmod(ns, 1000000000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%09dZ" % frac


class Ticket:
    """A queued request; done is set once it was sent (or given up)."""

    __slots__ = ("method", "path", "body", "done", "ok")

    def __init__(self, method, path, body):
        self.method, self.path, self.body = method, path, body
        self.done = threading.Event()
        self.ok = False


class _Sync:
    """torch.cuda.synchronize() on every device torch has initialised, so that a boundary is stamped after the GPU
    work queued before it, not when the host got ahead of it."""

    def __init__(self):
        self.torch = None
        self.warned = False

    def load(self):
        if self.torch is not None:
            return True
        try:
            import torch  # noqa: PLC0415 (imported only when asked for, and only once)
        except ImportError:
            if not self.warned:
                self.warned = True
                log.warning("lem: sync=True asked for, but torch cannot be imported: boundaries are not synchronised")
            return False
        self.torch = torch
        return True

    def __call__(self):
        if not self.load():
            return
        cuda = self.torch.cuda
        try:
            if not cuda.is_initialized():
                return  # no CUDA context in this process: nothing queued to wait for
            for d in range(cuda.device_count()):
                cuda.synchronize(d)
        except Exception as e:  # a failing GPU is the workload's to report, not the marker's
            if not self.warned:
                self.warned = True
                log.warning("lem: torch.cuda.synchronize() failed (%s): boundaries are not synchronised", e)


class Session:
    """Where this process's markers go. One per process (forked children get a fresh one that joins the run)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.cfg = {}
        self.state = "new"  # new, on, off
        self.mode = None  # run (lem-run's or a parent's run), exporter (a run of its own), stdout, off
        self.endpoint = None  # the server's root
        self.run_id = None
        self.owner = False
        self.sender_pid = None
        self.status_end = None
        self.ended = False
        self.gpus = None
        self.queue = None
        self.sync = _Sync()
        self.sync_default = False
        self.wait_s = DEFAULT_WAIT_S
        self.lease_s = DEFAULT_LEASE_S
        self.phase_seq = 0
        self.phase_current = None  # (seq, name)
        self.phase_at = 0  # the latest phase edge's time: edges go out in time order, whichever thread makes them
        self.counts = {"posted": 0, "renewed": 0, "failed": 0, "rejected": 0, "dropped": 0}
        self.warned = set()
        self.last_write = 0.0
        self.out = None  # stdout mode's stream

    # -- configuration ---------------------------------------------------------------------------------------

    def configure(self, **kw):
        with self.lock:
            if self.state != "new":
                raise RuntimeError("lem: configure() must come before the first marker (the session is %s)" % self.mode)
            if kw.get("lease_s") is not None and not 0 < float(kw["lease_s"]) <= 7 * 24 * 3600:
                raise ValueError("lem: lease_s %r: want 0 < lease_s <= 604800" % (kw["lease_s"],))
            if kw.get("markers") is not None and kw["markers"] not in ("http", "stdout", "off"):
                raise ValueError("lem: markers=%r: want http, stdout or off" % (kw["markers"],))
            if kw.get("experiment") is not None:
                grammar.experiment(kw["experiment"])
            if kw.get("run_id") is not None:
                grammar.run_id(kw["run_id"])
            if kw.get("gpus") is not None and any(not 0 <= g <= 1023 for g in kw["gpus"]):
                raise ValueError("lem: gpus=%r: GPU indices 0-1023" % (kw["gpus"],))
            for k, v in kw.items():
                if v is not None:
                    self.cfg[k] = v
            if kw.get("lease_s") is not None:
                self.lease_s = float(kw["lease_s"])
            if kw.get("wait_s") is not None:
                self.wait_s = min(max(float(kw["wait_s"]), 0.0), MAX_WAIT_S)
            if kw.get("sync") is not None:
                self.sync_default = bool(kw["sync"])
                if self.sync_default:
                    self.sync.load()

    def warn_once(self, key, msg, *args):
        with self.lock:
            if key in self.warned:
                return
            self.warned.add(key)
        log.warning(msg, *args)

    def _off(self, why, *args):
        self.state, self.mode = "off", "off"
        self.warn_once("off", "lem: " + why + "; markers are off and energies are None (the workload runs as usual)", *args)
        # Child processes of this workload stay quiet too, rather than each probing and warning again.
        os.environ["LEM_MARKERS"] = "off"

    def ensure(self):
        """Starts the session on first use: decides where markers go, and starts this process's run when it talks
        to a lem-exporter on its own."""
        if self.state != "new":
            return self.state == "on"
        with self.lock:
            if self.state != "new":
                return self.state == "on"
            try:
                self._start()
            except Exception as e:  # never into the workload: whatever went wrong, markers go off
                self._off("could not start (%s: %s)", type(e).__name__, e)
            return self.state == "on"

    def _start(self):
        cfg, env = self.cfg, os.environ
        markers = (cfg.get("markers") or env.get("LEM_MARKERS") or "").strip().lower()
        if markers and markers not in ("http", "stdout", "off"):
            raise ValueError("lem: markers=%r: want http, stdout or off" % markers)
        if markers == "off":
            self.state, self.mode = "off", "off"
            return
        if markers == "stdout":
            self.state, self.mode = "on", "stdout"
            self.out = cfg.get("stdout") or sys.stdout
            return
        run_url = cfg.get("run_url") or env.get("LEM_MARKER_URL")
        if run_url and not cfg.get("url"):
            self._join(run_url, cfg.get("token") or env.get("LEM_MARKER_TOKEN", ""))
            return
        url = cfg.get("url") or env.get("LEM_EXPORTER") or DEFAULT_EXPORTER
        token = cfg.get("token")
        if token is None:
            tf = cfg.get("token_file") or env.get("LEM_EXPORTER_TOKEN_FILE")
            token = ""
            if tf:
                try:
                    with open(tf, encoding="utf-8") as f:
                        token = f.read().strip()
                except OSError as e:
                    self._off("marker token file %s: %s", tf, e.strerror or e)
                    return
        self._own(url, token)

    def _join(self, run_url, token):
        """Markers go to an existing run: lem-run's, or one that a parent process started."""
        m = _RUN_URL.match(urllib.parse.urlsplit(run_url).path)
        if not m:
            raise ValueError("LEM_MARKER_URL %r is not a run's URL (…/api/v1/runs/RUN_ID)" % redact(run_url))
        u = urllib.parse.urlsplit(run_url)
        root = urllib.parse.urlunsplit((u.scheme, u.netloc, m.group(1), "", ""))
        self.endpoint = Endpoint(root, token)
        self.run_id = urllib.parse.unquote(m.group(2))
        self.mode, self.state = "run", "on"
        self._start_sender()

    def _own(self, url, token):
        """Starts a run of this process's own on a lem-exporter, with a lease renewed while the process lives."""
        ep = Endpoint(url, token)
        try:
            text = ep.once("GET", "/metrics", timeout=PROBE_TIMEOUT_S)
        except NETWORK_ERRORS as e:
            self._off("no LEM_MARKER_URL and no lem-exporter at %s (%s)", ep.display, _reason(e))
            return
        except Rejected as e:
            text = ""  # /metrics behind auth: the run can still start; GPUs stay unknown
            log.debug("lem: GET /metrics: %s", e)
        gpus = self.cfg.get("gpus")
        if gpus is None:
            gpus = workload_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), exporter_gpus(text), self.warn_once)
        experiment = self.cfg.get("experiment") or os.environ.get("LEM_EXPERIMENT") or _script_name()
        body = {"experiment": grammar.experiment(experiment), "lease_s": self.lease_s}
        if self.cfg.get("run_id"):
            body["run_id"] = grammar.run_id(self.cfg["run_id"])
        if gpus:
            body["labels"] = {"workload_gpus": ",".join(str(g) for g in gpus)}
        body["at"] = rfc3339(time.time_ns())
        try:
            run = ep.once("POST", "/api/v1/runs", body, timeout=POST_TIMEOUT_S)
        except Rejected as e:
            hint = ""
            if e.status in (401, 403):
                hint = " (set LEM_EXPORTER_TOKEN_FILE, or configure(token=…), to the exporter's marker token)"
            self._off("lem-exporter at %s refused the run: %s%s", ep.display, e, hint)
            return
        except NETWORK_ERRORS as e:
            self._off("lem-exporter at %s did not start the run (%s)", ep.display, _reason(e))
            return
        self.endpoint, self.run_id, self.gpus = ep, run["run_id"], gpus
        self.owner = True
        self.mode, self.state = "exporter", "on"
        self.last_write = time.monotonic()
        log.info("lem: run %s on lem-exporter %s (GPUs %s)", self.run_id, ep.display, gpus or "all")
        # Child processes (spawned workers, subprocesses) post into this run instead of starting their own.
        u = urllib.parse.urlsplit(url.rstrip("/"))
        os.environ["LEM_MARKER_URL"] = urllib.parse.urlunsplit(
            (u.scheme, u.netloc, u.path + "/api/v1/runs/" + urllib.parse.quote(self.run_id, safe=""), "", ""))
        if token:
            os.environ["LEM_MARKER_TOKEN"] = token
        self._hook_exit()
        self._start_sender()

    def _hook_exit(self):
        prev = sys.excepthook

        def hook(typ, val, tb):
            self.status_end = "interrupted" if issubclass(typ, KeyboardInterrupt) else "failed"
            prev(typ, val, tb)

        sys.excepthook = hook

    def _at_exit(self):
        """At the interpreter's exit (before daemon threads stop): what was marked is sent, and a run this process
        owns is ended; a process that exits right after its last marker loses none."""
        if os.getpid() != self.sender_pid:
            return  # a forked child exiting normally: its own sender registered its own
        if self.owner:
            self.end(self.status_end or "ok", timeout=EXIT_FLUSH_S)
        else:
            self.flush(EXIT_FLUSH_S)

    # -- the sender ------------------------------------------------------------------------------------------

    def _start_sender(self):
        self.queue = queue.Queue(QUEUE_MAX)
        self.sender_pid = os.getpid()
        threading.Thread(target=self._send_loop, name="lem-markers", daemon=True).start()
        atexit.register(self._at_exit)

    def _send_loop(self):
        conn = None
        renew = self.lease_s / 3 if self.owner else None
        while True:
            timeout = None
            if renew is not None:
                timeout = max(0.0, self.last_write + renew - time.monotonic())
            try:
                t = self.queue.get(timeout=timeout)
            except queue.Empty:
                t = Ticket("POST", "/renew", {})
            if t is None:
                break
            if t.method == "FLUSH":
                t.ok = True
                t.done.set()
                continue
            try:
                if conn is None:
                    conn = self.endpoint.connect(POST_TIMEOUT_S)
                self.endpoint.request(conn, t.method, self._run_path(t.path), t.body)
                t.ok = True
                self.counts["renewed" if t.path == "/renew" else "posted"] += 1
            except Rejected as e:
                self.counts["rejected"] += 1
                self.warn_once("rejected", "lem: the marker server refused %s %s: %s (further refusals are not logged)",
                               t.method, t.path, e)
            except NETWORK_ERRORS as e:
                self.counts["failed"] += 1
                if conn is not None:
                    conn.close()
                    conn = None
                self.warn_once("network", "lem: cannot reach the marker server at %s (%s): markers are being lost, "
                               "the workload goes on (further failures are not logged)", self.endpoint.display, _reason(e))
            finally:
                self.last_write = time.monotonic()
                t.done.set()
            if t.path == "/end" and t.ok:
                renew = None
        if conn is not None:
            conn.close()

    def _run_path(self, what):
        return "/api/v1/runs/" + urllib.parse.quote(self.run_id, safe="") + what

    def _submit(self, path, body):
        """Queues a post (under self.lock, so the queue's order is the order the markers were made)."""
        t = Ticket("POST", path, body)
        try:
            self.queue.put_nowait(t)
        except queue.Full:
            self.counts["dropped"] += 1
            self.warn_once("full", "lem: %d markers queued (the marker server is slow or gone): markers are dropped",
                           QUEUE_MAX)
            t.done.set()
        return t

    def flush(self, timeout=EXIT_FLUSH_S):
        """Waits until every marker made so far was sent (or timeout passes); True if they were."""
        if self.state != "on" or self.queue is None:
            return True
        t = Ticket("FLUSH", "", None)
        try:
            self.queue.put(t, timeout=timeout)
        except queue.Full:
            return False
        return t.done.wait(timeout)

    # -- markers ---------------------------------------------------------------------------------------------

    def _emit(self, kind, at, **kw):
        """Sends one marker where markers go; called with self.lock held."""
        if self.state != "on" or self.ended:
            return None
        if self.mode == "stdout":
            self._print(kind, at, **kw)
            return None
        stamp = rfc3339(at)
        if kind == "phase":
            return self._submit("/phase", {"name": kw["name"], "at": stamp})
        if kind == "phase_end":
            return self._submit("/phase/end", {"at": stamp})
        if kind == "result":
            body = dict(kw["values"])
            body["at"] = stamp
            return self._submit("/result", body)
        if kind == "window":
            return self._submit("/windows", {"name": kw["name"], "id": kw["id"], "at": stamp})
        if kind == "window_end":
            body = {"name": kw["name"], "id": kw["id"], "at": stamp}
            if kw["values"]:
                body["values"] = kw["values"]
            return self._submit("/windows/end", body)
        raise AssertionError(kind)

    def _print(self, kind, at, **kw):
        """Prints one marker line stamped with this process's clock (at=Unix seconds to the nanosecond): lem-run
        places the edge where it was made, not where it read the line (0.1-0.5 ms later, more under load)."""
        stamp = "at=%d.%09d" % divmod(at, 1000000000)
        if kind == "phase":
            line = "LEM_PHASE %s %s" % (kw["name"], stamp)
        elif kind == "phase_end":
            line = "LEM_PHASE_END " + stamp
        elif kind == "result":
            line = "LEM_RESULT " + " ".join([stamp] + ["%s=%s" % (k, grammar.line_text(v)) for k, v in kw["values"].items()])
        elif kind in ("window", "window_end"):
            line = ("LEM_WINDOW_BEGIN " if kind == "window" else "LEM_WINDOW_END ") + kw["name"]
            if kw["id"]:
                line += " id=" + kw["id"]
            line += " " + stamp
            for k, v in (kw.get("values") or {}).items():
                line += " %s=%s" % (k, grammar.line_text(v))
        else:
            raise AssertionError(kind)
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError) as e:
            self.warn_once("stdout", "lem: cannot write markers to stdout (%s)", e)

    def boundary(self, sync):
        """The instant of a boundary, after synchronising the GPUs when asked (outside the lock: it can take long)."""
        if sync is None:
            sync = self.sync_default
        if sync:
            self.sync()
        return time.time_ns()

    def begin_phase(self, name, sync=None):
        grammar.phase_name(name)
        self.ensure()
        at = self.boundary(sync)
        with self.lock:
            at = self._phase_edge(at)
            self.phase_seq += 1
            self.phase_current = (self.phase_seq, name)
            self._emit("phase", at, name=name)
            return self.phase_seq

    def end_phase(self, seq=None, sync=None):
        """Ends the current phase; with seq, only if the current phase is still the one that began as seq (a later
        phase already ended it otherwise)."""
        self.ensure()
        at = self.boundary(sync)
        with self.lock:
            cur = self.phase_current
            if cur is None or (seq is not None and cur[0] != seq):
                return
            self.phase_current = None
            self._emit("phase_end", self._phase_edge(at))

    def _phase_edge(self, at):
        """A phase edge's time, no earlier than the one before (under self.lock): a thread that took its time and
        then waited for the lock while another began a phase comes after it in time too, so lem-run, which orders
        edges by time, sees the phases in the order they replaced each other."""
        self.phase_at = max(at, self.phase_at)
        return self.phase_at

    def result(self, values, line=False):
        self.ensure()
        checked = grammar.values(values, line=line or self.mode == "stdout")
        at = time.time_ns()
        with self.lock:
            self._emit("result", at, values=checked)

    def window_begin(self, name, wid, sync):
        self.ensure()
        at = self.boundary(sync)
        with self.lock:
            self._emit("window", at, name=name, id=wid)
        return at

    def window_end(self, name, wid, values, sync):
        if values and self.ensure() and self.mode == "stdout":
            grammar.values(values, line=True)
        at = self.boundary(sync)
        with self.lock:
            t = self._emit("window_end", at, name=name, id=wid, values=values)
        return at, t

    def end(self, status="ok", timeout=EXIT_FLUSH_S):
        """Ends the run this process owns (after sending what is queued); a run it joined is left to its owner."""
        with self.lock:
            if self.ended or self.state != "on":
                return
            if not self.owner:
                t = None
            else:
                grammar.status(status)
                t = self._submit("/end", {"status": status, "at": rfc3339(time.time_ns())})
                self.ended = True
        if t is not None:
            t.done.wait(timeout)
        else:
            self.flush(timeout)

    # -- energies --------------------------------------------------------------------------------------------

    def energy(self, start_ns, end_ns, wait_s=None, gpus=None):
        """The energy of [start, end] on this run's GPUs (GET /api/v1/energy), or None where markers are off or the
        server cannot answer. end None: until now (a window still open)."""
        if not self.ensure() or self.mode not in ("run", "exporter"):
            return None
        open_ = end_ns is None
        if open_:
            end_ns = time.time_ns()  # so far: waits, like an ended window, until the data covers this instant
        if wait_s is None:
            wait_s = self.wait_s
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
        q = {"start": rfc3339(start_ns), "end": rfc3339(end_ns), "run": self.run_id, "wait": "%dms" % (wait_s * 1000)}
        if gpus:
            q["gpus"] = ",".join(str(g) for g in gpus)
        try:
            ans = self.endpoint.once("GET", "/api/v1/energy", query=q, timeout=wait_s + POST_TIMEOUT_S)
        except Rejected as e:
            self.warn_once("energy-" + str(e.status), "lem: the marker server answered no energy: %s", e)
            return None
        except NETWORK_ERRORS as e:
            self.warn_once("network", "lem: cannot reach the marker server at %s (%s): markers are being lost, "
                           "the workload goes on (further failures are not logged)", self.endpoint.display, _reason(e))
            return None
        if not isinstance(ans, dict):
            return None
        ans["open"] = open_
        return ans

    def status(self):
        with self.lock:
            st = dict(self.counts)
            st.update(mode=self.mode or "new", run_id=self.run_id, gpus=self.gpus,
                      url=self.endpoint.display if self.endpoint else None, owner=self.owner)
            if self.queue is not None:
                st["queued"] = self.queue.qsize()
            return st

    def after_fork(self):
        """In a forked child: the parent's threads are gone. Keep where markers go, post into the parent's run
        without owning it (the parent ends it), and start a sender of its own on first use."""
        self.lock = threading.RLock()
        self.owner = False
        if self.state == "on" and self.mode in ("run", "exporter"):
            self.mode = "run"
            self._start_sender()


def _reason(e):
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return "timed out"
    return "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__


def _script_name():
    base = os.path.splitext(os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else ""))[0]
    base = re.sub(r"[^\x20-\x7e]", "", base)[:128]
    return base if base and base != "-c" else "python"


def exporter_gpus(metrics_text):
    """The GPUs a lem-exporter samples, from its lem_gpu_info series: [(index, uuid)] in index order."""
    samples, _ = prom.parse(metrics_text or "")
    out = {}
    for s in samples:
        if s.name == "lem_gpu_info" and s.labels.get("gpu", "").isdigit():
            out[int(s.labels["gpu"])] = s.labels.get("uuid", "")
    return sorted(out.items())


def workload_gpus(cvd, listed, warn):
    """Maps CUDA_VISIBLE_DEVICES onto the exporter's GPU indices. Entries are indices (NVML's order, as
    CUDA_DEVICE_ORDER=PCI_BUS_ID gives) or UUIDs and their unique prefixes (GPU-…); MIG instances cannot be mapped
    (their GPU's whole energy would be measured anyway). Unset: every GPU the exporter lists. None: unknown (the
    exporter then uses every GPU it samples)."""
    if cvd is None:
        return [g for g, _ in listed] or None
    by_index = {g: u for g, u in listed}
    out = []
    for raw in cvd.split(","):
        e = raw.strip()
        if not e:
            continue
        if e.lstrip("-").isdigit():
            g = int(e)
            if g < 0:
                break  # CUDA stops at the first invalid entry
            if listed and g not in by_index:
                warn("cvd-" + e, "lem: CUDA_VISIBLE_DEVICES entry %s is not among the exporter's GPUs %s", e,
                     sorted(by_index))
                continue
            out.append(g)
            continue
        if e.startswith("MIG-"):
            warn("cvd-mig", "lem: CUDA_VISIBLE_DEVICES names MIG instances: the energy is that of every GPU sampled")
            return None
        match = [g for g, u in listed if u == e or (e.startswith("GPU-") and u.startswith(e))]
        if len(match) != 1:
            warn("cvd-" + e, "lem: CUDA_VISIBLE_DEVICES entry %s matches %s of the exporter's GPUs", e,
                 "none" if not match else "several")
            continue
        out.append(match[0])
    seen = []
    for g in out:
        if g not in seen:
            seen.append(g)
    return seen or None


SESSION = Session()


def _reset_after_fork():
    SESSION.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
