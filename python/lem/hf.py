"""Prefill and decode phases and token counts of HF transformers generate(), without touching the generation loop.

    model = AutoModelForCausalLM.from_pretrained(...)
    lem.hf.instrument(model)             # every model.generate() is marked and counted
    out = model.generate(input_ids, max_new_tokens=128)

or, per call, `model.generate(..., streamer=lem.hf.Streamer())`.

generate() hands its streamer the prompt before the first forward pass and then each new token, copied to the
host. So the first put() is the start of prefill, the second (the first new token, on the host: the GPU finished
prefill) the start of decode, and end() the end of decode. Each call's tokens are counted: input_tokens (the
prompt's tokens, without pad_token_id), output_tokens (new tokens of sequences that had not ended; a sequence ends
with its eos_token_id), requests (the batch's sequences); they are posted as run results (numbers add up) and, with
window=NAME, as the counts of a window per call. Beam search takes no streamer in transformers: those calls are not
marked.

transformers itself is not imported here; the tensors are read through .tolist()."""

import contextlib
import functools
import threading

from . import _session
from . import _grammar as grammar
from . import window as _window

__all__ = ["Streamer", "instrument"]


def _rows(value, prompt):
    """A token tensor (or nested list) as one row of ints per sequence. The prompt is [batch, length] (or one
    sequence's [length]); new tokens are [batch] (one each) or [batch, k]."""
    v = value.tolist() if hasattr(value, "tolist") else value
    if not isinstance(v, list):
        return [[v]]
    if v and isinstance(v[0], list):
        return v
    return [v] if prompt else [[t] for t in v]


def _ids(x):
    if x is None:
        return frozenset()
    if isinstance(x, (list, tuple, set, frozenset)):
        return frozenset(int(i) for i in x)
    return frozenset([int(x)])


class Streamer:
    """A generate() streamer that marks prefill and decode and counts tokens; inner, another streamer (a
    TextStreamer), still gets every call. One generate() at a time per Streamer; it resets itself at end()."""

    def __init__(self, prefill="prefill", decode="decode", window=None, results=True, eos_token_id=None,
                 pad_token_id=None, inner=None, sync=None):
        self.prefill = grammar.phase_name(prefill) if prefill else None
        self.decode = grammar.phase_name(decode) if decode else None
        self.window = grammar.phase_name(window, "window") if window else None
        self.results = results
        self.eos = _ids(eos_token_id)
        self.pad = _ids(pad_token_id)
        self.inner = inner
        self.sync = sync
        self.active = True
        self.last_window = None  # the latest call's window (with window=NAME)
        self.totals = {"input_tokens": 0, "output_tokens": 0, "requests": 0}  # over every call
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self._calls = 0
        self._done = None  # per sequence: ended with EOS
        self._counts = {"input_tokens": 0, "output_tokens": 0, "requests": 0}
        self._seq = None
        self._win = None

    @contextlib.contextmanager
    def paused(self):
        """Calls inside are neither marked nor counted (warm-ups)."""
        self.active = False
        try:
            yield self
        finally:
            self.active = True

    def put(self, value):
        if self.active:
            try:
                self._put(value)
            except Exception as e:  # counting must never break generation
                _session.SESSION.warn_once("hf-put", "lem.hf: cannot read generate()'s tokens (%s): not counted", e)
        if self.inner is not None:
            self.inner.put(value)

    def _put(self, value):
        with self._lock:
            self._calls += 1
            first = self._calls == 1
            rows = _rows(value, first)
            if first:
                self._counts["requests"] = len(rows)
                self._counts["input_tokens"] = sum(1 for r in rows for t in r if t not in self.pad)
                self._done = [False] * len(rows)
                if self.window:
                    self._win = _window(self.window, sync=self.sync)
            else:
                n = 0
                for i, r in enumerate(rows):
                    done = self._done[i] if i < len(self._done) else False
                    for t in r:
                        if done:
                            break
                        n += 1
                        done = t in self.eos
                    if i < len(self._done):
                        self._done[i] = done
                self._counts["output_tokens"] += n
            calls, win = self._calls, self._win
        if calls == 1:
            if win is not None:
                win.begin()
            if self.prefill:
                self._seq = _session.SESSION.begin_phase(self.prefill, self.sync)
        elif calls == 2 and self.decode:
            self._seq = _session.SESSION.begin_phase(self.decode, self.sync)

    def end(self):
        if self.active:
            try:
                self._end()
            except Exception as e:
                _session.SESSION.warn_once("hf-end", "lem.hf: cannot end generate()'s markers (%s)", e)
        if self.inner is not None:
            self.inner.end()

    def _end(self):
        with self._lock:
            if self._calls == 0:
                return
            counts, seq, win = dict(self._counts), self._seq, self._win
            self._reset()
            for k, v in counts.items():
                self.totals[k] += v
        if seq is not None:
            _session.SESSION.end_phase(seq, self.sync)
        if win is not None:
            win.end(counts)
            self.last_window = win
        if self.results:
            _session.SESSION.result(counts)


def _beams(model, kwargs):
    """The beam count a generate() call will use: its num_beams, its generation_config's, or the model's."""
    if kwargs.get("num_beams") is not None:
        return kwargs["num_beams"]
    for cfg in (kwargs.get("generation_config"), getattr(model, "generation_config", None)):
        n = getattr(cfg, "num_beams", None)
        if n is not None:
            return n
    return 1


def instrument(model, **kw):
    """Marks every model.generate() call (Streamer(**kw) joins any streamer the call passes) and returns the
    Streamer: its totals count every call, its paused() leaves warm-ups out, its last_window (with window=NAME) is
    the latest call's window. Calling instrument again returns the same Streamer."""
    existing = getattr(model, "_lem_streamer", None)
    if existing is not None:
        return existing
    cfg = getattr(model, "generation_config", None)
    kw.setdefault("eos_token_id", getattr(cfg, "eos_token_id", None))
    kw.setdefault("pad_token_id", getattr(cfg, "pad_token_id", None))
    s = Streamer(**kw)
    orig = model.generate

    @functools.wraps(orig)
    def generate(*args, **kwargs):
        if _beams(model, kwargs) > 1:
            return orig(*args, **kwargs)  # beam search takes no streamer: not marked
        inner = kwargs.pop("streamer", None)
        s.inner = inner
        try:
            return orig(*args, streamer=s, **kwargs)
        finally:
            s.inner = None

    model.generate = generate
    model._lem_streamer = s
    return s
