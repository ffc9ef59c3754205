"""A workload that marks and exits at once: what it marked must still reach the run."""

import lem

with lem.window("w", id=1):
    pass
lem.begin_phase("p")
lem.result(output_tokens=5)
