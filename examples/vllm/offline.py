"""vLLM offline batch inference with lem phase markers.

    lem-run --experiment vllm-offline -- python3 examples/vllm/offline.py --model PATH --num-prompts 256

vLLM batches continuously, so prefill and decode of different requests overlap; the phases here are the engine's
start-up (load, including CUDA-graph capture), a warm-up batch, and the measured generate batch. Per-request
timings (time to first token, decode time) are reported as results next to the token counts.

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
import time


def marker(line):
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model path or name (weights must be available offline)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256, help="prompt length in tokens (random token ids)")
    ap.add_argument("--max-tokens", type=int, default=256)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.engine.arg_utils import EngineArgs

    params = json.loads(os.environ.get("LEM_BACKEND_PARAMS") or "{}")
    engine_fields = {f.name for f in dataclasses.fields(EngineArgs)}
    engine = {k: v for k, v in params.items() if k in engine_fields}
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0, "ignore_eos": True}
    sampling.update({k: v for k, v in params.items() if k not in engine_fields})

    marker("LEM_PHASE load")
    llm = LLM(model=args.model, **engine)
    sp = SamplingParams(**sampling)
    rng = random.Random(0)
    vocab = llm.get_tokenizer().vocab_size

    def prompts(n):
        return [{"prompt_token_ids": [rng.randrange(10, vocab) for _ in range(args.prompt_len)]} for _ in range(n)]

    marker("LEM_PHASE warmup")
    llm.generate(prompts(min(8, args.num_prompts)), sp, use_tqdm=False)
    batch = prompts(args.num_prompts)
    marker("LEM_PHASE generate")
    t0 = time.time()
    outs = llm.generate(batch, sp, use_tqdm=False)
    elapsed = time.time() - t0
    marker("LEM_PHASE teardown")
    out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    in_tokens = sum(len(o.prompt_token_ids) for o in outs)
    ttft = [o.metrics.first_token_time - o.metrics.arrival_time for o in outs
            if getattr(o, "metrics", None) and getattr(o.metrics, "first_token_time", None)]
    res = f"LEM_RESULT output_tokens={out_tokens} input_tokens={in_tokens} requests={len(outs)} generate_s={elapsed:.3f}"
    if ttft:
        res += f" ttft_mean_s={sum(ttft) / len(ttft):.4f}"
    marker(res)


if __name__ == "__main__":
    main()
