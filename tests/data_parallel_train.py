"""`styleprompt train`, with every process's final learned rows and LoRA written to DUMP/rank<N>.safetensors.

    python tests/data_parallel_train.py DUMP <styleprompt train flags>
    python -m accelerate.commands.launch --cpu --num_processes 2 tests/data_parallel_train.py DUMP <flags>

Why a wrapper: a run's own files are rank 0's alone, and tests/test_data_parallel.py must see what
every process ends with to show they end equal. It writes just before `StyleTokenTrainer.finish`
takes the LoRA off the model; the run itself is the real command, untouched.
"""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from styleprompt.cli import main
from styleprompt.diffusion import training


def dump_before_finish(folder: Path) -> None:
    finish = training.StyleTokenTrainer.finish

    def finish_after_dump(self: training.StyleTokenTrainer) -> None:
        tensors = {"vectors": self.vectors().float().cpu().contiguous()}
        if self.lora is not None:
            tensors.update({f"lora.{name}": value for name, value in self.lora.state().items()})
        save_file(tensors, str(folder / f"rank{self.accelerator.process_index}.safetensors"))
        finish(self)

    training.StyleTokenTrainer.finish = finish_after_dump  # type: ignore[method-assign]


if __name__ == "__main__":
    dump = Path(sys.argv[1])
    dump.mkdir(parents=True, exist_ok=True)
    dump_before_finish(dump)
    sys.exit(main(["train", *sys.argv[2:]]))
