"""styleprompt: learn a style word <S> for a text-to-image diffusion model by textual inversion.

The code lives in wings (`diffusion`, `evaluation`, `micro`, `plumbing`, plus `cli`/`commands`
and `ui`); the names users import are re-exported here, lazily, so `import styleprompt` stays
cheap (no torch) until one of them is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from styleprompt.plumbing.errors import UserError

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "TrainConfig": "styleprompt.diffusion.config",
    "train": "styleprompt.diffusion.training",
    "StyleTokenTrainer": "styleprompt.diffusion.training",
    "load_pipeline": "styleprompt.diffusion.models",
    "GenerateConfig": "styleprompt.diffusion.generate",
    "generate": "styleprompt.diffusion.generate",
    "load_embeddings": "styleprompt.diffusion.generate",
    "Embedding": "styleprompt.diffusion.formats",
    "read_embedding": "styleprompt.diffusion.formats",
    "write_embedding": "styleprompt.diffusion.formats",
    "evaluate_image": "styleprompt.evaluation.evaluate",
    "run_compare": "styleprompt.evaluation.compare",
}

__all__ = ["UserError", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'styleprompt' has no attribute {name!r}")
