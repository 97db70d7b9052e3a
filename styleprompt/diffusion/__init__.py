"""The diffusion side: load a model, learn a style token, write its files, generate with it.

Why a wing of its own: everything here imports diffusers/transformers, and nothing here knows
about classic style transfer or the evaluation layer above it (tests/test_layout.py checks it).
"""
