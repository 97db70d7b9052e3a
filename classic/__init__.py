"""Classic neural style transfer baselines: Gatys et al. (VGG-19), AdaIN, Ghiasi et al.

Independent of `styleprompt`: nothing here imports it.
"""

from classic.errors import UserError

__all__ = ["UserError"]
