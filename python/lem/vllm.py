"""Token and request counts of vLLM, offline and served.

Offline: `outputs = lem.vllm.generate(llm, prompts, sampling_params)` runs llm.generate() inside a window and
posts input_tokens, output_tokens and requests (as the window's counts and as run results).

Served: the counts come from the server's Prometheus /metrics (vllm:prompt_tokens_total,
vllm:generation_tokens_total, vllm:request_success_total), read before and after the benchmark, so a client needs
no token bookkeeping of its own:

    with lem.vllm.ServerCounts("http://localhost:8000") as counts:
        run_benchmark()
    counts.values   # {"input_tokens": …, "output_tokens": …, "requests": …}, posted as run results

vLLM itself is not imported here. Per-request energy under continuous batching (requests overlap) is not computed
here: a window per request (`lem.window("request", id=rid)`) records each request's interval and tokens.
"""

import urllib.error
import urllib.request

from . import _session, prom
from . import window as _window

__all__ = ["count_outputs", "generate", "ServerCounts", "server_totals", "counts_between"]

# The server's counters behind each count. vllm:request_success_total is labelled by finished_reason; the reasons
# below are failures, not successes (vLLM counts aborted requests there too).
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"
FAILED_REASONS = frozenset(["abort", "error"])


def count_outputs(outputs):
    """input_tokens, output_tokens and requests of vLLM RequestOutputs (every completion of a request with n > 1)."""
    inp = out = 0
    n = 0
    for o in outputs:
        n += 1
        inp += len(getattr(o, "prompt_token_ids", None) or [])
        for c in getattr(o, "outputs", None) or []:
            out += len(getattr(c, "token_ids", None) or [])
    return {"input_tokens": inp, "output_tokens": out, "requests": n}


def generate(llm, *args, window="generate", results=True, **kwargs):
    """llm.generate(*args, **kwargs) inside a window (a name, or a lem.Window to read the energy from afterwards)
    whose end carries the counts; also posts them as run results unless results=False. Returns the outputs."""
    w = _window(window) if isinstance(window, str) else window
    with w:
        outputs = llm.generate(*args, **kwargs)
        try:
            w.add(count_outputs(outputs))
        except Exception as e:  # counting must never lose the outputs
            _session.SESSION.warn_once("vllm-count", "lem.vllm: cannot count the outputs (%s)", e)
            return outputs
    if results:
        _session.SESSION.result(dict(w.values))
    return outputs


def server_totals(text, model=None):
    """The three counters from /metrics text, summed over engines (and finished reasons but the failures), for one
    model_name if given: {"input_tokens", "output_tokens", "requests", "failed_requests"}; a counter the text lacks
    is None."""
    samples, _ = prom.parse(text)
    where = {"model_name": model} if model else None
    ok = failed = 0.0
    seen = False
    for s in samples:
        if s.name != REQUEST_SUCCESS or (model and s.labels.get("model_name") != model):
            continue
        seen = True
        if s.labels.get("finished_reason") in FAILED_REASONS:
            failed += s.value
        else:
            ok += s.value
    return {"input_tokens": prom.total(samples, PROMPT_TOKENS, where),
            "output_tokens": prom.total(samples, GENERATION_TOKENS, where),
            "requests": ok if seen else None,
            "failed_requests": failed if seen else None}


def counts_between(before, after):
    """The counts a benchmark added: after - before, per counter (ints; None where either lacks it). A counter that
    went down means the server restarted in between: its count is None."""
    out = {}
    for k in ("input_tokens", "output_tokens", "requests", "failed_requests"):
        a, b = before.get(k), after.get(k)
        out[k] = None if a is None or b is None or b < a else int(round(b - a))
    return out


def fetch_metrics(url, timeout=10.0):
    """GET url/metrics as text."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as resp:
        return resp.read(32 << 20).decode("utf-8", "replace")


class ServerCounts:
    """Counts of a vLLM server between enter and exit (see the module's doc); posted as run results at exit unless
    results=False. values is None where /metrics could not be read (warned once; the benchmark goes on)."""

    def __init__(self, url, model=None, results=True, timeout=10.0):
        self.url, self.model, self.results, self.timeout = url, model, results, timeout
        self.before = self.after = None
        self.values = None

    def _read(self):
        try:
            return server_totals(fetch_metrics(self.url, self.timeout), self.model)
        except (OSError, urllib.error.URLError, ValueError) as e:
            _session.SESSION.warn_once("vllm-metrics", "lem.vllm: cannot read %s/metrics (%s): no server counts",
                                       self.url, e)
            return None

    def __enter__(self):
        self.before = self._read()
        return self

    def __exit__(self, *exc):
        self.after = self._read()
        if self.before is None or self.after is None:
            return False
        counts = counts_between(self.before, self.after)
        values = {k: v for k, v in counts.items() if v is not None and (k != "failed_requests" or v > 0)}
        if not values:
            _session.SESSION.warn_once("vllm-metrics", "lem.vllm: %s/metrics has no vLLM token or request counters%s",
                                       self.url, " of model_name %r" % self.model if self.model else "")
            return False
        self.values = values
        if self.results:
            _session.SESSION.result(values)
        return False
