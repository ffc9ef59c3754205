"""HF transformers generate benchmark with lem phases, windows and token counts.

Each round is one model.generate() call over a batch of prompts. Prefill (the forward pass over the prompts, up to
the first new token) and decode (the remaining tokens, with the KV cache) are separate phases, marked by
lem.hf.Streamer without touching the generation loop: decode starts when generate() hands out the first new token,
which it has copied to the host, so the GPU has finished prefill. Each round is also a window ("generate") with its
token counts; the run's results are the rounds' input and output tokens and requests. After the warm-up, --idle
seconds with nothing running are marked as a phase and a window named idle: the GPU's active idle, which lem
subtracts for the energy adjusted to active idle (docs/METHODOLOGY.md, "Two idles").

    lem-run --experiment llama-bs8 -- python3 examples/hf/generate.py --batch-size 8

--markers client (the default) posts the markers to lem-run's marker server (or, outside lem-run, to a
lem-exporter) and prints each round's energy at the end; --markers stdout prints them as LEM_PHASE / LEM_WINDOW /
LEM_RESULT lines for lem-run to read instead: the same calls, so the two can be compared on one workload.
--markers both compares the two paths on one run: the phases, windows and results go over HTTP as with client,
and each round's prefill and decode are also printed as stdout windows of the same names (LEM_WINDOW_BEGIN
prefill at=… …), at the same points of the program, just after each HTTP marker is queued.

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

try:
    import lem
    import lem.hf
except ImportError:  # run from a checkout, the package not installed
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
    import lem
    import lem.hf


class StdoutEdges:
    """An inner streamer for --markers both: lem.hf.Streamer calls it after its own HTTP marker at each edge (the
    GPU already synchronised), so the same prefill and decode edges also reach lem-run as stdout windows, each line
    stamped with this process's clock at the edge as lem's client does in stdout mode (at=Unix seconds)."""

    def __init__(self):
        self.calls = 0

    @staticmethod
    def mark(*lines):
        at = "at=%d.%09d" % divmod(time.time_ns(), 1000000000)
        print("\n".join("%s %s" % (line, at) for line in lines), flush=True)

    def put(self, value):
        self.calls += 1
        if self.calls == 1:
            self.mark("LEM_WINDOW_BEGIN prefill")
        elif self.calls == 2:
            self.mark("LEM_WINDOW_END prefill", "LEM_WINDOW_BEGIN decode")

    def end(self):
        if self.calls >= 2:
            self.mark("LEM_WINDOW_END decode")
        elif self.calls == 1:
            self.mark("LEM_WINDOW_END prefill")
        self.calls = 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--model", help="path of real weights (default: random-init Llama, ~1 B parameters)")
    ap.add_argument("--repeats", type=int, default=1, help="generate() rounds (prefill and decode phases repeat)")
    ap.add_argument("--idle", type=float, default=3.0,
                    help="seconds of active idle after the warm-up: the model loaded, nothing running (a window named "
                         "idle, which lem subtracts for energy adjusted to active idle); 0: none")
    ap.add_argument("--markers", choices=["client", "stdout", "both"], default="client",
                    help="post markers over HTTP (lem's Python client), print them as marker lines, or both (the "
                         "phases over HTTP, the same edges also printed as stdout windows)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("generate.py: no CUDA device")
    # Every boundary waits for the GPU work queued before it (torch.cuda.synchronize), in both marker modes.
    lem.configure(markers="stdout" if args.markers == "stdout" else "http", sync=True)
    params = {"max_new_tokens": args.new_tokens, "do_sample": False}
    params.update(json.loads(os.environ.get("LEM_BACKEND_PARAMS") or "{}"))
    params.setdefault("min_new_tokens", params["max_new_tokens"])
    torch.manual_seed(0)
    lem.begin_phase("load")
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
    else:
        cfg = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16, num_attention_heads=16,
                          num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096)
        with torch.device("cuda"):  # initialised on the GPU: seconds, where the CPU takes tens of them
            model = LlamaForCausalLM(cfg)
    model = model.to("cuda", dtype=torch.bfloat16).eval()
    gen = GenerationConfig(**params)
    gen.pad_token_id = gen.pad_token_id if gen.pad_token_id is not None else 0
    print("generation parameters:", json.dumps({k: getattr(gen, k) for k in sorted(params)}), flush=True)
    ids = torch.randint(3, model.config.vocab_size, (args.batch_size, args.prompt_len), device="cuda")
    mask = torch.ones_like(ids)
    streamer = lem.hf.Streamer(window="generate", eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id,
                               inner=StdoutEdges() if args.markers == "both" else None)

    def round_trip(measured):
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen,
                                 streamer=streamer if measured else None)
        torch.cuda.synchronize()
        return out.shape[1] - ids.shape[1]

    lem.begin_phase("warmup")
    round_trip(measured=False)  # a full round: kernels, allocator and every cache shape
    if args.idle > 0:
        # Active idle: the context and the model held, the clocks up, no kernel running.
        lem.begin_phase("idle")
        with lem.window("idle"):
            time.sleep(args.idle)
    t0 = time.time()
    rounds = []
    for _ in range(args.repeats):
        round_trip(measured=True)
        rounds.append(streamer.last_window)
    elapsed = time.time() - t0
    lem.begin_phase("teardown")
    new = streamer.totals["output_tokens"]
    print(f"generated {new} tokens in {elapsed:.2f} s", flush=True)
    for i, w in enumerate(rounds):  # read after the rounds: fetching an energy waits for the counter
        if w is not None and w.energy_j is not None:
            tokens = int(w.values["output_tokens"])
            print(f"round {i}: {w.duration_s:.3f} s, {w.energy_j:.1f} J, {w.energy_j / tokens:.4f} J/token"
                  + (f" ({w.adjusted_j / tokens:.4f} adjusted)" if w.adjusted_j is not None else ""), flush=True)


if __name__ == "__main__":
    main()
