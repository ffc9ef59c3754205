"""Serving benchmark against a running vLLM OpenAI-compatible server, with lem phase markers.

Sends --num-prompts completion requests with --concurrency in flight (streamed, so time to first token is seen)
and reports token counts and latency as lem results. In a campaign the server is a persistent backend container
(client mode): lem measures its start-up once, then brackets each benchmark run; the server's address arrives as
LEM_BACKEND_HOST.

    python3 examples/vllm/serve_bench.py --url http://localhost:8000 --model NAME --concurrency 32

Standard library only, so it runs from any Python next to the server.
"""
import argparse
import concurrent.futures
import json
import os
import random
import time
import urllib.request


def marker(line):
    print(line, flush=True)


def one(url, model, prompt, max_tokens):
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    t0 = time.time()
    ttft, usage = None, {}
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
    return ttft or 0.0, time.time() - t0, usage.get("completion_tokens", 0), usage.get("prompt_tokens", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="")
    ap.add_argument("--model", required=True)
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt-words", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()
    url = args.url or "http://%s:8000" % os.environ.get("LEM_BACKEND_HOST", "localhost")
    rng = random.Random(0)
    words = "energy token batch decode prefill cache tensor kernel memory power".split()
    prompts = [" ".join(rng.choice(words) for _ in range(args.prompt_words)) for _ in range(args.num_prompts)]

    marker("LEM_PHASE warmup")
    one(url, args.model, prompts[0], 16)
    marker("LEM_PHASE benchmark")
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        res = list(pool.map(lambda p: one(url, args.model, p, args.max_tokens), prompts))
    elapsed = time.time() - t0
    marker("LEM_PHASE teardown")
    out_tok = sum(r[2] for r in res)
    in_tok = sum(r[3] for r in res)
    ttft = sorted(r[0] for r in res)
    marker(f"LEM_RESULT output_tokens={out_tok} input_tokens={in_tok} requests={len(res)} "
           f"benchmark_s={elapsed:.3f} ttft_p50_s={ttft[len(ttft) // 2]:.4f} ttft_p99_s={ttft[int(len(ttft) * 0.99)]:.4f}")


if __name__ == "__main__":
    main()
