# A dataclass-declared parameter set, as vLLM's EngineArgs is: the introspection test catalogues it.
import dataclasses


@dataclasses.dataclass
class EngineArgs:
    model: str
    max_num_seqs: int = 256
    dtype: str = "auto"
    enforce_eager: bool = False
    block_sizes: list = dataclasses.field(default_factory=lambda: [16, 32])
