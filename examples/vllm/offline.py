"""vLLM offline batch inference with lem phases, a window and token counts.

    lem-run --experiment vllm-offline -- python3 examples/vllm/offline.py --model PATH --num-prompts 256

vLLM batches continuously, so prefill and decode of different requests overlap; the phases here are the engine's
start-up (load, including CUDA-graph capture), a warm-up batch, and the measured generate batch. The measured
llm.generate() runs through lem.vllm.generate: a window with the batch's input and output tokens and requests,
posted as results too. Time to first token is reported as a result next to them. --markers stdout prints the
markers as lines for lem-run instead of posting them (lem's Python client, python/lem: in a container, mount it
and put it on PYTHONPATH, as examples/vllm/campaign.yaml does).

Engine arguments (vLLM EngineArgs fields: max_num_seqs, dtype, quantization, tensor_parallel_size, enforce_eager,
gpu_memory_utilization, …) and sampling parameters (SamplingParams fields: max_tokens, temperature, …) come from
the campaign's backend_params (JSON in LEM_BACKEND_PARAMS; names are checked against the installed vLLM's
catalogue by lem-run before anything runs); each name goes to whichever of the two declares it.
"""
import argparse
import dataclasses
import json
import os
import random
import sys
import time

try:
    import lem
    import lem.vllm
except ImportError:  # run from a checkout, the package not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import lem
    import lem.vllm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model path or name (weights must be available offline)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256, help="prompt length in tokens (random token ids)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--markers", choices=["client", "stdout"], default="client",
                    help="post markers over HTTP (lem's Python client) or print them as marker lines")
    args = ap.parse_args()
    lem.configure(markers="http" if args.markers == "client" else "stdout")

    from vllm import LLM, SamplingParams
    from vllm.engine.arg_utils import EngineArgs

    params = json.loads(os.environ.get("LEM_BACKEND_PARAMS") or "{}")
    engine_fields = {f.name for f in dataclasses.fields(EngineArgs)}
    engine = {k: v for k, v in params.items() if k in engine_fields}
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0, "ignore_eos": True}
    sampling.update({k: v for k, v in params.items() if k not in engine_fields})

    lem.begin_phase("load")
    llm = LLM(model=args.model, **engine)
    sp = SamplingParams(**sampling)
    rng = random.Random(0)
    vocab = llm.get_tokenizer().vocab_size

    def prompts(n):
        return [{"prompt_token_ids": [rng.randrange(10, vocab) for _ in range(args.prompt_len)]} for _ in range(n)]

    lem.begin_phase("warmup")
    llm.generate(prompts(min(8, args.num_prompts)), sp, use_tqdm=False)
    batch = prompts(args.num_prompts)
    lem.begin_phase("generate")
    t0 = time.time()
    w = lem.window("generate")
    outs = lem.vllm.generate(llm, batch, sp, use_tqdm=False, window=w)  # posts the tokens and requests
    elapsed = time.time() - t0
    lem.begin_phase("teardown")
    ttft = [o.metrics.first_token_time - o.metrics.arrival_time for o in outs
            if getattr(o, "metrics", None) and getattr(o.metrics, "first_token_time", None)]
    res = {"generate_s": round(elapsed, 3)}
    if ttft:
        res["ttft_mean_s"] = round(sum(ttft) / len(ttft), 4)
    lem.result(res)
    if w.energy_j is not None:
        tokens = w.values["output_tokens"]
        print(f"generate: {tokens} output tokens in {w.duration_s:.2f} s, {w.energy_j:.0f} J, "
              f"{w.energy_j / tokens:.4f} J/token", flush=True)


if __name__ == "__main__":
    main()
