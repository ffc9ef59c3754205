"""HF transformers generate benchmark with lem phase markers.

Each round is one model.generate() call over a batch of prompts. Prefill (the forward pass over the prompts, up to
the first new token) and decode (the remaining tokens, with the KV cache) are separate phases: the marker for
decode is printed when generate() hands out the first new token, which it has copied to the host, so the marker
time is when the GPU finished prefill.

    lem-run --experiment llama-bs8 -- python3 examples/hf/generate.py --batch-size 8

Without --model the model is a randomly initialised Llama-architecture model (~1 B parameters): the arithmetic,
and so the energy, is that of a real model of this shape. With --model PATH, real weights are loaded.

Generation parameters: greedy, exactly --new-tokens per sequence (min_new_tokens = max_new_tokens, so a random
model's end-of-sequence token cannot shorten the run). A campaign's backend_params (transformers GenerationConfig
fields, checked against the installed version's catalogue) arrive as JSON in LEM_BACKEND_PARAMS and override
these; the effective values are printed.
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM


def marker(line):
    print(line, flush=True)


class DecodeMarker:
    """A generate() streamer: its first put() is the prompt, its second the first new token (prefill done)."""

    def __init__(self):
        self.calls = 0

    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            marker("LEM_PHASE decode")

    def end(self):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--model", help="path of real weights (default: random-init Llama, ~1 B parameters)")
    ap.add_argument("--repeats", type=int, default=1, help="generate() rounds (prefill and decode phases repeat)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("generate.py: no CUDA device")
    params = {"max_new_tokens": args.new_tokens, "do_sample": False}
    params.update(json.loads(os.environ.get("LEM_BACKEND_PARAMS") or "{}"))
    params.setdefault("min_new_tokens", params["max_new_tokens"])
    torch.manual_seed(0)
    marker("LEM_PHASE load")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    else:
        cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096)
        model = LlamaForCausalLM(cfg)
    model = model.to("cuda", dtype=torch.bfloat16).eval()
    gen = GenerationConfig(**params)
    gen.pad_token_id = gen.pad_token_id if gen.pad_token_id is not None else 0
    print("generation parameters:", json.dumps({k: getattr(gen, k) for k in sorted(params)}), flush=True)
    ids = torch.randint(3, model.config.vocab_size, (args.batch_size, args.prompt_len), device="cuda")
    mask = torch.ones_like(ids)

    def round_trip(phases):
        torch.cuda.synchronize()
        if phases:
            marker("LEM_PHASE prefill")
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen,
                                 streamer=DecodeMarker() if phases else None)
        torch.cuda.synchronize()
        return out.shape[1] - ids.shape[1]

    marker("LEM_PHASE warmup")
    round_trip(phases=False)  # a full round: kernels, allocator and every cache shape
    t0 = time.time()
    new = 0
    for _ in range(args.repeats):
        new += args.batch_size * round_trip(phases=True)
    elapsed = time.time() - t0
    marker("LEM_PHASE teardown")
    n = args.repeats * args.batch_size
    marker(f"LEM_RESULT output_tokens={new} input_tokens={n * args.prompt_len} requests={n}")
    print(f"generated {new} tokens in {elapsed:.2f} s", flush=True)


if __name__ == "__main__":
    main()
