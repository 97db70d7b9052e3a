"""The `styleprompt` command line: one subcommand per module in `styleprompt.commands`.

Why this shape: each feature owns its own small command module, and this file only wires them
together and turns a `UserError` into one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from styleprompt.plumbing.errors import UserError, cli_message

# Library settings whose flag is not their own name (the rest: `init_word` -> `--init-word`).
SETTING_FLAGS = {"fmt": "--to", "classes": "--class", "loras": "--lora"}

# Subcommands, in the order `--help` lists them. Each name is a module in styleprompt.commands.
COMMANDS: list[str] = [
    "train",
    "transfer",
    "compare",
    "evaluate",
    "survey",
    "survey-results",
    "pick",
    "generate",
    "convert",
    "inspect",
    "blend",
    "world",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleprompt",
        description="Learn a style word <S> by textual inversion; compare it with classic style transfer.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"styleprompt.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user mistake prints one line and returns 2, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library chatter (torchvision fallbacks, dtype notes) is not for our users; errors still show.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:  # a setting is named as its flag: `vectors` -> `--vectors`
        print(f"error: {cli_message(exc, SETTING_FLAGS)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
