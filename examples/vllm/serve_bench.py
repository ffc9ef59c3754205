"""Serving benchmark against a running vLLM OpenAI-compatible server, with lem phases, windows and results.

Sends --num-prompts completion requests with --concurrency in flight (streamed, so time to first token is seen).
The run's token and request counts come from the server itself: its Prometheus /metrics counters
(vllm:prompt_tokens_total, vllm:generation_tokens_total, vllm:request_success_total) read before and after the
benchmark, through lem.vllm.ServerCounts; the client's own count of streamed tokens is reported beside them as a
cross-check. Each request is a window ("request", its id) with its token counts. In a campaign the server is a
persistent backend container (client mode): lem measures its start-up once, then brackets each benchmark run; the
server's address arrives as LEM_BACKEND_HOST.

    python3 examples/vllm/serve_bench.py --url http://localhost:8000 --model NAME --concurrency 32

Standard library and lem's Python client (python/lem) only, so it runs from any Python next to the server.
--markers stdout prints the markers as lines for lem-run instead of posting them.
"""
import argparse
import concurrent.futures
import json
import os
import random
import sys
import time
import urllib.request

try:
    import lem
    import lem.vllm
except ImportError:  # run from a checkout, the package not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import lem
    import lem.vllm


def one(url, model, prompt, max_tokens, rid=None):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    w = lem.window("request", id=rid).begin() if rid is not None else None
    t0 = time.time()
    ttft, usage = None, {}
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[5:])
                if ttft is None and ev.get("choices") and ev["choices"][0].get("text"):
                    ttft = time.time() - t0
                if ev.get("usage"):
                    usage = ev["usage"]
    finally:
        if w is not None:
            w.end(output_tokens=usage.get("completion_tokens", 0), input_tokens=usage.get("prompt_tokens", 0))
    return ttft or 0.0, time.time() - t0, usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="")
    ap.add_argument("--model", required=True)
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--markers", choices=["client", "stdout"], default="client",
                    help="post markers over HTTP (lem's Python client) or print them as marker lines")
    args = ap.parse_args()
    lem.configure(markers="http" if args.markers == "client" else "stdout")
    url = args.url or "http://%s:8000" % os.environ.get("LEM_BACKEND_HOST", "localhost")
    rng = random.Random(0)
    words = "energy token batch decode prefill cache tensor kernel memory power".split()
    prompts = [" ".join(rng.choice(words) for _ in range(args.prompt_words)) for _ in range(args.num_prompts)]

    lem.begin_phase("warmup")
    one(url, args.model, prompts[0], 16)
    lem.begin_phase("benchmark")
    t0 = time.time()
    # The server's counters around the benchmark: posted as input_tokens, output_tokens, requests at the end.
    with lem.vllm.ServerCounts(url, model=args.model) as server:
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            res = list(pool.map(lambda ip: one(url, args.model, ip[1], args.max_tokens, rid=ip[0]),
                                enumerate(prompts)))
    elapsed = time.time() - t0
    lem.begin_phase("teardown")
    out_tok = sum(r[2] for r in res)
    in_tok = sum(r[3] for r in res)
    ttft = sorted(r[0] for r in res)
    results = {"client_output_tokens": out_tok, "client_input_tokens": in_tok, "benchmark_s": round(elapsed, 3),
               "ttft_p50_s": round(ttft[len(ttft) // 2], 4), "ttft_p99_s": round(ttft[int(len(ttft) * 0.99)], 4)}
    if server.values is None:  # no /metrics: the client's own counts stand in
        results.update(output_tokens=out_tok, input_tokens=in_tok, requests=len(res))
    lem.result(results)


if __name__ == "__main__":
    main()
