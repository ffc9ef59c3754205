# Reports an inference backend's parameter catalogue as JSON on stdout: versions, and every parameter a run can
# set with its type and default. Run by `lem-run introspect` inside the backend's own environment (the image, or
# the current interpreter). Standard library only; the backend itself is the only import that may fail.
import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import platform
import sys

SKIP = {"self", "cls", "args", "kwargs"}


def jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if hasattr(v, "value") and isinstance(getattr(v, "value"), (str, int, float)):  # enums
        return v.value
    return repr(v)


def type_name(t):
    if t is None or t is inspect.Parameter.empty or t is dataclasses.MISSING:
        return ""
    if isinstance(t, str):
        return t
    if isinstance(t, type):
        return t.__name__
    return str(t).replace("typing.", "")


def param(name, group, typ, default, required=False):
    return {"name": name, "group": group, "type": type_name(typ), "default": jsonable(default), "required": required}


def from_signature(fn, group):
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.name in SKIP or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        req = p.default is p.empty
        out.append(param(p.name, group, p.annotation, None if req else p.default, req))
    return out


def from_dataclass(cls, group):
    out = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        if f.default is not dataclasses.MISSING:
            d, req = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            try:
                d, req = f.default_factory(), False
            except Exception:  # factories that need a runtime (devices, configs)
                d, req = None, False
        else:
            d, req = None, True
        out.append(param(f.name, group, f.type, d, req))
    return out


def from_pydantic(cls, group):
    out = []
    for name, f in cls.model_fields.items():
        req = f.is_required()
        d = None
        if not req:
            try:
                d = f.get_default(call_default_factory=True)
            except Exception:
                d = None
        out.append(param(name, group, f.annotation, d, req))
    return out


def from_msgspec(cls, group):
    names = cls.__struct_fields__
    defaults = cls.__struct_defaults__
    hints = getattr(cls, "__annotations__", {})
    first = len(names) - len(defaults)
    out = []
    for i, name in enumerate(names):
        req = i < first
        d = None if req else defaults[i - first]
        if type(d).__name__ == "Factory":
            try:
                d = d.factory()
            except Exception:
                d = None
        out.append(param(name, group, hints.get(name), d, req))
    return out


def from_instance(obj, group, exclude=()):
    out = []
    for name, v in sorted(obj.to_dict().items()):
        if name.startswith("_") or name in exclude:
            continue
        out.append(param(name, group, type(v) if v is not None else None, v))
    return out


def catalogue(obj, group):
    """Parameters of a class or callable, whatever declares them."""
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            return from_dataclass(obj, group)
        if hasattr(obj, "model_fields"):
            return from_pydantic(obj, group)
        if hasattr(obj, "__struct_fields__"):
            return from_msgspec(obj, group)
        return from_signature(obj.__init__, group)
    return from_signature(obj, group)


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except Exception:
        return ""


def transformers_catalogue():
    import transformers
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin
    ps = from_instance(GenerationConfig(), "generation_config", exclude={"transformers_version"})
    # Recent versions leave most fields None and apply their own defaults when generate() runs: record those.
    applied = getattr(GenerationConfig, "_get_default_generation_params", None)
    applied = applied() if callable(applied) else {}
    for p in ps:
        if p["default"] is None and p["name"] in applied:
            v = applied[p["name"]]
            p["default"] = jsonable(v)
            if not p["type"] and v is not None:
                p["type"] = type_name(type(v))
    ps += [p for p in from_signature(GenerationMixin.generate, "generate") if p["name"] != "generation_config"]
    return "transformers", transformers.__version__, ps


def vllm_catalogue():
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.engine.arg_utils import EngineArgs
    ps = catalogue(EngineArgs, "engine") + catalogue(SamplingParams, "sampling")
    engine = {p["name"] for p in ps}
    ps += [p for p in from_signature(LLM.__init__, "llm") if p["name"] not in engine]
    return "vllm", vllm.__version__, ps


def tensorrt_llm_catalogue():
    import tensorrt_llm
    from tensorrt_llm import SamplingParams
    try:
        from tensorrt_llm.llmapi.llm_args import TorchLlmArgs as Args
    except ImportError:
        from tensorrt_llm.llmapi import LlmArgs as Args
    return "tensorrt-llm", tensorrt_llm.__version__, catalogue(Args, "llm") + catalogue(SamplingParams, "sampling")


def python_catalogue(targets):
    """Generic: module:attr targets, each a class or callable."""
    ps, first = [], None
    for t in targets:
        mod, _, attr = t.partition(":")
        m = importlib.import_module(mod)
        first = first or mod
        obj = m
        for part in attr.split("."):
            obj = getattr(obj, part)
        ps += catalogue(obj, attr or mod)
    return first, version(first.split(".")[0]) or getattr(sys.modules[first], "__version__", ""), ps


def main():
    backend, targets = sys.argv[1], sys.argv[2:]
    out = {"python": platform.python_version()}
    try:
        if backend == "transformers":
            name, ver, ps = transformers_catalogue()
        elif backend == "vllm":
            name, ver, ps = vllm_catalogue()
        elif backend == "tensorrt-llm":
            name, ver, ps = tensorrt_llm_catalogue()
        elif backend == "python":
            name, ver, ps = python_catalogue(targets)
        else:
            raise ValueError("unknown backend " + backend)
    except Exception as e:  # reported, not raised: the caller names the image or interpreter
        out["error"] = "%s: %s" % (type(e).__name__, e)
        json.dump(out, sys.stdout)
        sys.exit(3)
    out.update({"backend": backend, "module": name, "version": ver, "parameters": ps})
    try:
        import torch
        out["torch"] = torch.__version__
        out["cuda"] = torch.version.cuda or ""
    except Exception:
        pass
    json.dump(out, sys.stdout, default=repr)


main()
