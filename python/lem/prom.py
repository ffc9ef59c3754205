"""A reader of the Prometheus text exposition format (version 0.0.4), enough for the counters and info metrics lem
reads from lem-exporter (lem_gpu_info) and inference servers (vLLM's token and request counters).

The text comes from the network, so the reader never raises on what it is given: a line it cannot read is skipped
and counted, and the caller decides whether what is left is enough."""

import collections
import math

__all__ = ["Sample", "parse", "total"]


Sample = collections.namedtuple("Sample", "name labels value")
Sample.__doc__ = "One sample: its name, labels (a dict) and value (a float)."


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _labels(s, i):
    """Reads {k="v",…} from s[i] == '{'; returns (labels, index after '}') or None."""
    labels = {}
    i += 1
    n = len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i < n and s[i] == "}":
            return labels, i + 1
        j = i
        while j < n and (s[j].isalnum() or s[j] == "_"):
            j += 1
        key = s[i:j]
        while j < n and s[j] in " \t":
            j += 1
        if not key or j >= n or s[j] != "=":
            return None
        j += 1
        while j < n and s[j] in " \t":
            j += 1
        if j >= n or s[j] != '"':
            return None
        j += 1
        out = []
        while j < n and s[j] != '"':
            if s[j] == "\\" and j + 1 < n:
                out.append(_ESCAPES.get(s[j + 1], "\\" + s[j + 1]))
                j += 2
                continue
            out.append(s[j])
            j += 1
        if j >= n:
            return None
        labels[key] = "".join(out)
        i = j + 1


def _number(s):
    try:
        v = float(s)  # also "+Inf", "-Inf", "NaN" and 1.5e+06, as the format writes them
    except ValueError:
        return None
    return v


def parse(text):
    """Parses exposition text into (samples, skipped): the samples in order, and how many non-comment lines could
    not be read. Bytes are decoded as UTF-8 with replacement."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    samples, skipped = [], 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        i, n = 0, len(line)
        while i < n and (line[i].isalnum() or line[i] in "_:"):
            i += 1
        name = line[:i]
        if not name or name[0].isdigit():
            skipped += 1
            continue
        labels = {}
        if i < n and line[i] == "{":
            got = _labels(line, i)
            if got is None:
                skipped += 1
                continue
            labels, i = got
        rest = line[i:].split()
        v = _number(rest[0]) if 1 <= len(rest) <= 2 else None  # a second field is the sample's timestamp
        if v is None:
            skipped += 1
            continue
        samples.append(Sample(name, labels, v))
    return samples, skipped


def total(samples, name, where=None):
    """Sums the finite samples named name whose labels include where's pairs (None for none at all)."""
    found, s = False, 0.0
    for smp in samples:
        if smp.name != name or not math.isfinite(smp.value):
            continue
        if where and any(smp.labels.get(k) != v for k, v in where.items()):
            continue
        found, s = True, s + smp.value
    return s if found else None
