"""The evaluation side: the stylization method registry, metrics, compare, reports, pick, survey.

Why a wing of its own: it sits above both the diffusion side and `classic/` and puts them side by
side with the same metrics and timings; neither of them imports it (tests/test_layout.py).
"""
