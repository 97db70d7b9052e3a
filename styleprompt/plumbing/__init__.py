"""The leaves every other module stands on: the error type, atomic files, safe image I/O, timing,
CPU threads, run folders.

Why leaves: `classic` imports this wing and nothing more of styleprompt, so it must not import
torch, diffusers or any other wing at import time (tests/test_layout.py).
"""
