"""One module per `styleprompt` subcommand.

Each module defines `add_parser(subparsers)` (which sets `func=run`) and `run(args) -> int`.
Heavy imports (torch, diffusers, gradio) happen inside `run`, so `styleprompt --help` is fast.
"""
