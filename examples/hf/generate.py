"""HF transformers generate benchmark with lem phase markers.

Prefill (one forward pass over the prompt) and decode (token-by-token greedy steps with the KV cache) are
separate phases, each fenced by torch.cuda.synchronize() so the marker times are when the GPU work ran:

    lem-run --experiment llama-bs8 -- python3 examples/hf/generate.py --batch-size 8

Without --model the model is a randomly initialised Llama-architecture model (~1 B parameters): the arithmetic,
and so the energy, is that of a real model of this shape. With --model PATH, real weights are loaded.
"""
import argparse
import sys
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def marker(line):
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--model", help="path of real weights (default: random-init Llama, ~1 B parameters)")
    ap.add_argument("--repeats", type=int, default=1, help="prefill+decode rounds (phases repeat)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("generate.py: no CUDA device")
    torch.manual_seed(0)
    marker("LEM_PHASE load")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16)
    else:
        cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096)
        model = LlamaForCausalLM(cfg)
    model = model.to("cuda", dtype=torch.bfloat16).eval()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.prompt_len), device="cuda")

    def round_trip(new_tokens, phases):
        with torch.no_grad():
            torch.cuda.synchronize()
            if phases:
                marker("LEM_PHASE prefill")
            out = model(input_ids=ids, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            torch.cuda.synchronize()
            if phases:
                marker("LEM_PHASE decode")
            for _ in range(new_tokens - 1):
                out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
            torch.cuda.synchronize()

    torch.cuda.synchronize()
    marker("LEM_PHASE warmup")
    round_trip(args.new_tokens, phases=False)  # a full round: kernels, allocator and every cache shape
    t0 = time.time()
    for _ in range(args.repeats):
        round_trip(args.new_tokens, phases=True)
    elapsed = time.time() - t0
    n = args.repeats * args.batch_size
    marker(f"LEM_RESULT output_tokens={n * args.new_tokens} input_tokens={n * args.prompt_len} requests={n}")
    print(f"generated {n * args.new_tokens} tokens in {elapsed:.2f} s", flush=True)


if __name__ == "__main__":
    main()
