"""`styleprompt train` (and `train_style_token.py`): flags -> TrainConfig -> training.train."""

from __future__ import annotations

import argparse

from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.models import DEFAULT_MODEL, MODEL_CHOICES_HELP

_DEFAULTS = TrainConfig(images="")


def _default(name: str) -> str:
    """`default: X` (and `Y on --model micro` where micro's figures chose another value)."""
    from styleprompt.diffusion.config import MODEL_TRAINING_DEFAULTS, TRAINING_DEFAULTS
    from styleprompt.diffusion.families import MICRO_MODEL

    def shown(value: float) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}"

    text = f"default: {shown(TRAINING_DEFAULTS[name])}"
    micro = MODEL_TRAINING_DEFAULTS.get(MICRO_MODEL, {})
    return text + (f"; {shown(micro[name])} on --model micro" if name in micro else "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    parser.add_argument("--images", required=True, help="folder of 3-20 artworks in one style (jpg, png, webp)")
    parser.add_argument("--token", default=d.token, help="the new style word, e.g. <my-style> (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"{MODEL_CHOICES_HELP} (default: {DEFAULT_MODEL})")
    parser.add_argument("--output", default=d.output, help="run folder (default: %(default)s)")
    parser.add_argument("--init-word", default=d.init_word, help="word the token starts from (default: %(default)s)")
    parser.add_argument(
        "--vectors", type=int, default=None, help="embedding vectors per token (default: 4; 1 on --model micro)"
    )
    parser.add_argument(
        "--norm-cap",
        type=float,
        default=None,
        help="keep each learned vector within this multiple of the longest word embedding's length "
        "(0: no cap; default: 0, and 1.0 on --model micro)",
    )
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (default: %(default)s)")
    parser.add_argument(
        "--resolution", type=int, default=None, help="training size in pixels (default: the model's own)"
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument(
        "--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step (default: %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    parser.add_argument("--scale-lr", action="store_true", help="multiply lr by grad-accum x batch x processes")
    parser.add_argument(
        "--lr-scheduler",
        default=d.lr_scheduler,
        choices=["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"],
    )
    parser.add_argument("--lr-warmup-steps", type=int, default=d.lr_warmup_steps)
    parser.add_argument("--property", dest="learnable_property", default="style", choices=["style", "object"])
    parser.add_argument(
        "--save-every",
        type=int,
        default=None,
        help="write an intermediate embedding every N steps (default: 250, or steps/8 in a shorter run)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="write a resumable checkpoint every N steps (default: 500, or steps/4 in a shorter run)",
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=None,
        help="the validation loss on a fixed set every N steps, into loss.csv (0: never; default: --save-every's)",
    )
    parser.add_argument(
        "--preview-every", type=int, default=d.preview_every, help="render a preview image every N steps (0: never)"
    )
    parser.add_argument(
        "--preview-prompt", default=d.preview_prompt, help="{token} is replaced by the token (default: %(default)r)"
    )
    parser.add_argument("--preview-steps", type=int, default=d.preview_steps, help="sampling steps of a preview")
    parser.add_argument("--mixed-precision", default=d.mixed_precision, choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a non-empty --output, removing the old run's files (others stay)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    lora = parser.add_argument_group("pivotal tuning (a LoRA beside the token)")
    lora.add_argument(
        "--adapter",
        default=d.adapter,
        choices=["none", "lora"],
        help="none: the token alone (textual inversion); lora: the token plus a LoRA (default: %(default)s)",
    )
    lora.add_argument("--lora-rank", type=int, default=d.lora_rank, help="LoRA rank (default: %(default)s)")
    lora.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    lora.add_argument("--lora-lr", type=float, default=None, help=f"the LoRA's learning rate ({_default('lora_lr')})")
    lora.add_argument(
        "--ti-fraction",
        type=float,
        default=None,
        help=f"the token trains for this fraction of the steps (0: the LoRA alone; {_default('ti_fraction')})",
    )
    lora.add_argument(
        "--lora-start",
        type=float,
        default=None,
        help="the LoRA joins after this fraction of the steps (0: all run; equal to --ti-fraction: the "
        f"original pivotal tuning, the token first, then the LoRA around it; {_default('lora_start')})",
    )
    lora.add_argument("--lora-text-encoder", action="store_true", help="a LoRA on the text encoder(s) too")
    lora.add_argument(
        "--lora-blocks",
        default=d.lora_blocks,
        choices=["all", "style"],
        help="all attention projections, or only the block B-LoRA/InstantStyle find the style in (default: %(default)s)",
    )
    lora.add_argument(
        "--lora-conv",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the resnets' convolutions too (kohya's LoCon): reaches the blocks that have no attention "
        f"({_default('lora_conv')})",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="learn a style token from a folder of artworks")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from styleprompt.diffusion.training import check_config, train
    from styleprompt.diffusion.training_run import TrainingRun

    cfg = config_from_args(args)
    check_config(cfg)  # before the folder is locked (which creates it) or cleared
    run = TrainingRun(cfg.output)
    with run.locked():  # held from the --overwrite below to the run's end (train() re-enters it)
        run.claim(overwrite=args.overwrite, resume=args.resume is not None, images=cfg.images)
        result = train(cfg)
    state = "stopped early at" if result.stopped_early else "finished"
    loss = f", last loss {result.final_loss:.4f}" if result.final_loss is not None else ""
    lora = f"; LoRA: {result.lora_path}" if result.lora_path else ""
    print(f"{state} step {result.steps_done}{loss}; embedding: {result.embedding_path}{lora}")
    return 0
