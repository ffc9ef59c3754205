"""Energy of a Python workload's phases, windows and tokens, measured by lem.

    import lem

    with lem.phase("prefill"):           # exclusive phases, as LEM_PHASE lines
        ...
    with lem.window("batch") as w:       # windows may nest and overlap; ids tell concurrent ones apart
        ...
        w.add(output_tokens=17)          # counts, sent with the window's end
    print(w.energy_j, w.adjusted_j, w.per_gpu, w.duration_s)
    lem.result(output_tokens=128)        # run results (numbers add up), as LEM_RESULT lines

Where markers go, decided at the first marker:
  * under lem-run: to its marker server ($LEM_MARKER_URL, $LEM_MARKER_TOKEN), into the run it measures;
  * otherwise to a lem-exporter ($LEM_EXPORTER, default http://127.0.0.1:9636; token from
    $LEM_EXPORTER_TOKEN_FILE), in a run of this process's own that ends when the process exits (a lease the
    process renews ends it as expired if the process is killed); its GPUs are those of CUDA_VISIBLE_DEVICES;
  * with LEM_MARKERS=stdout (or configure(markers="stdout")): as marker lines on stdout, for lem-run to read;
  * nowhere, with one warning, when none of these is there: the workload runs as usual, energies are None.

Nothing here reads NVML or needs a GPU library; the standard library is enough. Markers are sent in the order
they were made by a daemon thread, each with its own time, so the workload never waits for the network, and a
network error never reaches it (the first one is logged to the "lem" logger).
"""

import collections
import functools
import os
import threading
import time

from . import _grammar as grammar
from ._session import SESSION as _S
from ._session import exporter_gpus, workload_gpus  # noqa: F401 (for tools and tests)

__version__ = "0.1.0"
__all__ = ["configure", "phase", "begin_phase", "end_phase", "window", "Window", "GPUEnergy", "result", "end",
           "flush", "run_id", "status", "energy"]


def configure(url=None, token=None, token_file=None, run_url=None, experiment=None, run_id=None, gpus=None,
              markers=None, sync=None, wait_s=None, lease_s=None):
    """Sets where markers go before the first marker (environment variables otherwise):

    url, token, token_file: a lem-exporter to start a run on (instead of $LEM_EXPORTER and its token file);
    run_url: post into an existing run (…/api/v1/runs/RUN_ID) instead of $LEM_MARKER_URL;
    experiment, run_id: of the run this process starts (default $LEM_EXPERIMENT or the script's name; a generated
    id); gpus: the run's GPU indices (default from CUDA_VISIBLE_DEVICES);
    markers: "http" (the default), "stdout" or "off";
    sync: torch.cuda.synchronize() at every boundary unless a call says otherwise;
    wait_s: how long an energy may wait to be counter-exact (default 5 s, at most 10);
    lease_s: the run's lease (default 30 s): a killed process's run ends this long after its last word.
    """
    if gpus is not None:
        gpus = [int(g) for g in gpus]
    _S.configure(url=url, token=token, token_file=token_file, run_url=run_url, experiment=experiment, run_id=run_id,
                 gpus=gpus, markers=markers, sync=sync, wait_s=wait_s, lease_s=lease_s)


class _Phase:
    """A phase as a context manager or decorator."""

    def __init__(self, name, sync):
        self.name = grammar.phase_name(name)
        self.sync = sync
        self._seq = threading.local()

    def __enter__(self):
        stack = getattr(self._seq, "stack", None)
        if stack is None:
            stack = self._seq.stack = []
        stack.append((os.getpid(), _S.begin_phase(self.name, self.sync)))
        return self

    def __exit__(self, *exc):
        pid, seq = self._seq.stack.pop()
        if pid == os.getpid():  # a forked child leaving its parent's block does not end the parent's phase
            _S.end_phase(seq, self.sync)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        return wrapped


def phase(name, sync=None):
    """A phase: `with lem.phase("prefill"): …` or `@lem.phase("prefill")`. Phases are exclusive (a new one ends the
    current one, as LEM_PHASE lines do); leaving the block ends the phase unless a later one already has."""
    return _Phase(name, sync)


def begin_phase(name, sync=None):
    """Starts a phase now (ending the current one), like a LEM_PHASE line."""
    grammar.phase_name(name)
    _S.begin_phase(name, sync)


def end_phase(sync=None):
    """Ends the current phase without starting another."""
    _S.end_phase(None, sync)


GPUEnergy = collections.namedtuple("GPUEnergy", "gpu uuid energy_j adjusted_j method")
GPUEnergy.__doc__ = "One GPU's part of a window's energy."


class Window:
    """A named interval of the run: `with lem.window("batch") as w: …`, `@lem.window("step")`, or begin() and
    end() from different callbacks (a request's window, with id=). Windows may nest and overlap; windows of one
    name open at once need distinct ids.

    After the window, its energy is fetched on first access and kept: energy_j (raw, the workload's GPUs summed),
    adjusted_j (minus the idle baseline; None without one, as on a plain lem-exporter), sampled_j, per_gpu
    ({index: GPUEnergy}), final (counter-exact: the answer waited for a counter reading after the end), warnings.
    While the window is open they are the energy from its beginning to the access (which waits, like the answer
    after the end, until the data covers that instant), fetched on every access. None where markers are off."""

    def __init__(self, name, id=None, sync=None):  # noqa: A002 (id is the protocol's word)
        self.name = grammar.phase_name(name, "window")
        self.id = grammar.window_id(id)
        self.sync = sync
        self.values = {}
        self.started_ns = None
        self.ended_ns = None
        self._answer = None
        self._pid = None
        self._lock = threading.Lock()

    def begin(self):
        """Begins the window now; returns it."""
        with self._lock:
            if self.started_ns is not None:
                raise RuntimeError("lem: window %s has already begun (a Window is one occurrence)" % self._key())
            self.started_ns = -1  # taken: a concurrent begin() fails rather than posting twice
            self._pid = os.getpid()
        self.started_ns = _S.window_begin(self.name, self.id, self.sync)
        return self

    def add(self, values=None, **kw):
        """Adds counts sent with the window's end (output_tokens=17): numbers add up, other values replace."""
        vals = dict(values or {}, **kw)
        checked = grammar.values(vals) if vals else {}
        with self._lock:
            for k, v in checked.items():
                old = self.values.get(k)
                num = (int, float)
                if isinstance(v, num) and not isinstance(v, bool) and isinstance(old, num) and not isinstance(old, bool):
                    self.values[k] = old + v
                else:
                    self.values[k] = v
        return self

    def end(self, values=None, **kw):
        """Ends the window now, with counts (added to those of add())."""
        if values or kw:
            self.add(values, **kw)
        with self._lock:
            if self.started_ns is None:
                raise RuntimeError("lem: window %s ends before it began" % self._key())
            if self._pid != os.getpid():
                return self  # a forked child leaving its parent's block: the window is the parent's to end
            if self.ended_ns is not None:
                raise RuntimeError("lem: window %s has already ended" % self._key())
            self.ended_ns = -1
            vals = dict(self.values)
        self.ended_ns, _ = _S.window_end(self.name, self.id, vals, self.sync)
        return self

    def _key(self):
        return self.name + ("#" + self.id if self.id else "")

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end()
        return False

    def __call__(self, fn):
        """As a decorator: a new window of this name (and id) around every call."""

        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with Window(self.name, self.id or None, self.sync):
                return fn(*args, **kwargs)

        return wrapped

    # -- energy ----------------------------------------------------------------------------------------------

    @property
    def open(self):
        return self.started_ns is not None and self.ended_ns is None

    @property
    def duration_s(self):
        """Seconds from begin to end (to now while open); None before it began."""
        if self.started_ns is None or self.started_ns < 0:
            return None
        end = self.ended_ns if self.ended_ns is not None and self.ended_ns >= 0 else _now_ns()
        return (end - self.started_ns) / 1e9

    def energy(self, wait_s=None):
        """The server's whole answer for this window (a dict, see docs/MANIFEST.md), or None. An ended window's
        answer is fetched once (waiting up to wait_s for it to be counter-exact) and kept; refresh() asks again."""
        if self.started_ns is None or self.started_ns < 0:
            return None
        if self.ended_ns is not None and self.ended_ns < 0:
            return None  # ending right now in another thread
        if self.ended_ns is None:
            return _S.energy(self.started_ns, None)
        with self._lock:
            if self._answer is None:
                self._answer = _S.energy(self.started_ns, self.ended_ns, wait_s)
            return self._answer

    def refresh(self, wait_s=None):
        """Asks again (an answer that was not final may have become so); returns the new answer."""
        with self._lock:
            self._answer = None
        return self.energy(wait_s)

    def _field(self, key):
        a = self.energy()
        return None if a is None else a.get(key)

    energy_j = property(lambda self: self._field("energy_j"), doc="Raw energy (J), the workload's GPUs summed.")
    adjusted_j = property(lambda self: self._field("adjusted_j"), doc="Energy minus the idle baseline (J).")
    sampled_j = property(lambda self: self._field("sampled_j"), doc="Energy of the 50 Hz samples alone (J).")
    final = property(lambda self: bool(self._field("final")), doc="Counter-exact (a counter reading after the end).")
    warnings = property(lambda self: list(self._field("warnings") or []), doc="Data-quality codes of the answer.")

    @property
    def per_gpu(self):
        """{GPU index: GPUEnergy} (None where markers are off)."""
        a = self.energy()
        if a is None:
            return None
        return {g["gpu"]: GPUEnergy(g["gpu"], g.get("uuid", ""), g.get("energy_j"), g.get("adjusted_j"), g.get("method"))
                for g in a.get("gpus") or []}

    def __repr__(self):
        state = "open" if self.open else ("ended" if self.ended_ns is not None else "new")
        return "<lem.Window %s %s>" % (self._key(), state)


def window(name, id=None, sync=None):  # noqa: A002
    """A window (see Window): `with lem.window("batch") as w`, `@lem.window("step")`, or
    `w = lem.window("req", id=rid).begin()` … `w.end(output_tokens=n)`."""
    return Window(name, id, sync)


def result(values=None, **kw):
    """Run results: `lem.result(output_tokens=128, requests=8)`, or a dict for keys with dots ({"ttft.p50": 0.1}).
    Numbers with the same key add up over the run; other values replace."""
    _S.result(dict(values or {}, **kw))


def energy(start, end, wait_s=None):
    """The energy of any recent interval of this run's GPUs ([start, end] in Unix seconds, or nanoseconds as
    time.time_ns() gives), as the server's answer dict; None where markers are off."""

    def ns(t):
        return t if isinstance(t, int) and t > 10**14 else int(round(t * 1e9))

    return _S.energy(ns(start), ns(end), wait_s)


def end(status="ok"):
    """Ends the run this process started on a lem-exporter (it ends itself at exit otherwise); under lem-run, only
    waits until what was marked has been sent."""
    _S.end(status)


def flush(timeout=5.0):
    """Waits (at most timeout seconds) until every marker made so far has been sent; True if it has."""
    return _S.flush(timeout)


def run_id():
    """The run's id (starting the session if it has not started); None where markers are off or go to stdout."""
    _S.ensure()
    return _S.run_id


def status():
    """Where markers go and what became of them: mode (run, exporter, stdout, off), url, run_id, gpus, and counts
    of markers posted, refused by the server (rejected), lost to network errors (failed) and dropped."""
    return _S.status()


def _now_ns():
    return time.time_ns()
