"""styleprompt: learn a style word <S> for a text-to-image diffusion model by textual inversion."""

from styleprompt.errors import UserError

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
