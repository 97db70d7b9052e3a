"""`styleprompt survey-results KEY ANSWERS...`: tally a preference study per method."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "survey-results",
        help="tally the answers of a `styleprompt survey` per method",
        description="Reads survey-key.json (or the compare folder holding it) and the answer files raters sent back.",
    )
    parser.add_argument("key", help="survey-key.json, or the compare folder that holds it")
    parser.add_argument("answers", nargs="+", help="survey-answers-*.json files, or folders of them")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--output", default=None, help="also write the tally as JSON to this file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from styleprompt.evaluation.survey import answer_files, read_key, tally
    from styleprompt.plumbing.files import write_text_atomic

    result = tally(read_key(args.key), answer_files(args.answers))
    text = json.dumps(result.as_dict(), indent=2)
    if args.output:
        write_text_atomic(args.output, text + "\n")
    print(text if args.json else result.table())
    return 0
