"""generate() as HF transformers drives its streamer, with stand-ins for the model and tensors (transformers is
not installed where the tests run): the prompt first, then one token per sequence per step, then end(). argv[1]:
"streamer" (passed per call), "instrument" (lem.hf.instrument) or "sync" (boundaries synchronised)."""

import sys

import lem
import lem.hf


class Tensor:
    def __init__(self, rows):
        self.rows = rows

    def tolist(self):
        return self.rows


class Model:
    """Batch of 2 prompts (3 and 2 tokens, the second left-padded with 0); 4 steps; sequence 1 emits EOS (2) at
    step 2, then pad."""

    class generation_config:  # noqa: N801 (as transformers names it)
        eos_token_id = 2
        pad_token_id = 0

    def generate(self, input_ids, streamer=None, max_new_tokens=4, num_beams=1):
        if streamer is not None and num_beams > 1:
            raise ValueError("`streamer` cannot be used with beam search")  # as transformers refuses it
        steps = [[11, 21], [12, 2], [13, 0], [14, 0]][:max_new_tokens]
        if streamer is not None:
            streamer.put(Tensor(input_ids))
            for s in steps:
                print("step", flush=True)
                streamer.put(Tensor(s))
            streamer.end()
        return steps


class Echo:
    def put(self, value):
        print("inner put", len(value.tolist()), flush=True)

    def end(self):
        print("inner end", flush=True)


def main():
    model = Model()
    prompt = [[5, 6, 7], [0, 8, 9]]
    if sys.argv[1] == "streamer":
        s = lem.hf.Streamer(window="generate", eos_token_id=2, pad_token_id=0)
        model.generate(prompt, streamer=s)
        model.generate(prompt, streamer=s, max_new_tokens=1)
    elif sys.argv[1] == "instrument":
        s = lem.hf.instrument(model, prefill="pre", decode="dec")
        with s.paused():
            model.generate(prompt)  # a warm-up: neither marked nor counted
        model.generate(prompt, streamer=Echo())
        model.generate(prompt, num_beams=2)  # beam search: not marked
    else:
        lem.configure(sync=True)
        s = lem.hf.Streamer(eos_token_id=2, pad_token_id=0, results=False)
        model.generate(prompt, streamer=s, max_new_tokens=2)
    print("totals", s.totals, flush=True)


if __name__ == "__main__":
    main()
