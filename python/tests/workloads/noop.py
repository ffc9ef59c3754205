"""A workload with nowhere to send markers: everything runs, energies are None. With an argument it also starts a
child workload (which must stay quiet: the process tree warns once). Prints what it saw as JSON."""

import json
import os
import subprocess
import sys
import time

import lem
import lem.hf
import lem.vllm


class LLM:
    def generate(self, prompts):
        return []


def main():
    lem.begin_phase("load")
    with lem.phase("prefill"):
        with lem.window("batch") as w:
            time.sleep(0.05)
            w.add(output_tokens=3)

    @lem.window("step")
    def step(x):
        return 2 * x

    assert step(21) == 42
    s = lem.hf.Streamer(window="generate")
    s.put([[5, 6, 7]])
    s.put([8])
    s.end()
    lem.vllm.generate(LLM(), ["p"])
    lem.result(output_tokens=3)
    lem.end_phase()
    if len(sys.argv) > 1:
        subprocess.run([sys.executable, os.path.abspath(__file__)], check=True)
    print(json.dumps({"energy": w.energy_j, "per_gpu": w.per_gpu, "answer": w.energy(), "duration": w.duration_s,
                      "run_id": lem.run_id(), "status": lem.status(), "flush": lem.flush(1)}), flush=True)


if __name__ == "__main__":
    main()
