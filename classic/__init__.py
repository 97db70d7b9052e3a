"""Classic neural style transfer baselines: Gatys et al. (VGG-19), AdaIN, Ghiasi et al.

Of `styleprompt` it imports only the leaf modules every part of the project shares (`errors`,
`files`, `images`: the error type, atomic writes, safe image reading), never the diffusion side.
"""
