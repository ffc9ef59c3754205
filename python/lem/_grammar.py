"""The marker grammar, checked in the caller's thread so that a bad name is a ValueError at the call that made it,
not a rejection the server reports later. The same rules as lem's Go marker protocol (internal/marker)."""

import math
import re

_PHASE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_WINDOW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,63}")
_RUN_ID = _WINDOW_ID
_STATUS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VALUE_LEN = 256
MAX_RESULTS_PER_POST = 32
MAX_EXPERIMENT_LEN = 128


def _printable(s):
    return all(ord(c) >= 0x20 and ord(c) != 0x7F and ord(c) != 0xFFFD for c in s)


def phase_name(name, what="phase"):
    """Checks a phase or window name: 1-64 letters, digits or _.:/-."""
    if not isinstance(name, str) or not _PHASE.fullmatch(name):
        raise ValueError("lem: %s name %r: 1-64 letters, digits or _.:/-" % (what, name))
    return name


def window_id(wid):
    """Checks a window id (None: none); ints are taken as their decimal text."""
    if wid is None:
        return ""
    if isinstance(wid, bool) or not isinstance(wid, (str, int)):
        raise ValueError("lem: window id %r: a string or an int" % (wid,))
    s = str(wid)
    if not _WINDOW_ID.fullmatch(s):
        raise ValueError("lem: window id %r: 1-64 letters, digits or _.:- starting with a letter or digit" % (s,))
    return s


def run_id(rid):
    """Checks a run id: 1-64 letters, digits or _.:- starting with a letter or digit, no '..'."""
    if not isinstance(rid, str) or not _RUN_ID.fullmatch(rid) or ".." in rid:
        raise ValueError("lem: run id %r: 1-64 letters, digits or _.:- starting with a letter or digit" % (rid,))
    return rid


def status(s):
    """Checks a run's end status: an identifier such as ok, failed, interrupted."""
    if not isinstance(s, str) or not _STATUS.fullmatch(s):
        raise ValueError("lem: status %r: an identifier such as ok, failed, interrupted" % (s,))
    return s


def experiment(name):
    """Checks an experiment name: 1-128 printable characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_EXPERIMENT_LEN or not _printable(name):
        raise ValueError("lem: experiment %r: 1-%d printable characters" % (name, MAX_EXPERIMENT_LEN))
    return name


def value(key, v, line=False):
    """Checks one result value and returns it for JSON: a finite number, a bool, or 1-256 printable characters
    (without spaces when it goes on a marker line, whose fields are split at whitespace)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError("lem: result key %r: a letter or _ then up to 63 letters, digits, _ or ." % (key,))
    if key == "at":
        raise ValueError("lem: result key 'at' is the marker's own time, not a value")
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError("lem: result %s=%r: not a finite number" % (key, v))
        return v
    if hasattr(v, "item") and callable(v.item):  # a numpy or torch scalar
        return value(key, v.item(), line)
    if isinstance(v, str):
        if not v or len(v) > MAX_VALUE_LEN or not _printable(v):
            raise ValueError("lem: result %s=%r: 1-%d printable characters" % (key, v, MAX_VALUE_LEN))
        if line and any(c.isspace() for c in v):
            raise ValueError("lem: result %s=%r: a marker line's value has no spaces" % (key, v))
        return v
    raise ValueError("lem: result %s=%r: want a number, a bool or a string" % (key, v))


def values(d, line=False):
    """Checks a result post: 1-32 values."""
    if not d or len(d) > MAX_RESULTS_PER_POST:
        raise ValueError("lem: %d result values: want 1-%d" % (len(d), MAX_RESULTS_PER_POST))
    return {k: value(k, v, line) for k, v in d.items()}


def line_text(v):
    """A checked value as marker-line text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)
