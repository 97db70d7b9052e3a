"""Training settings as plain values. The defaults are the recipe we recommend for styles on SD 1.5.

Where the defaults come from (README "Training defaults" repeats this):
- lr 5e-3, constant: AUTOMATIC1111's textual-inversion default (0.005), which works for styles
  with a few vectors; diffusers' example uses 5e-4 x grad_accum x batch (= 2e-3 here) with --scale-lr.
- vectors 4: styles carry more than one word's worth of information; A1111 and the textual
  inversion paper's follow-ups use 4-8 vectors for styles and 1-2 for objects. On the micro
  model 1 (`MODEL_TRAINING_DEFAULTS` below: its small text encoder lets 4 drown the class word).
- norm cap: none (A1111 and diffusers have none); on the micro model each vector is kept within
  the longest word embedding's length (`MODEL_TRAINING_DEFAULTS` below says why).
- steps 2000 with grad_accum 4, batch 1: diffusers' example style recipe runs 3000 steps of
  grad_accum 4; styles converge earlier (use `styleprompt pick` on the saved steps).
- init word "painting": the style-templates start every token near "painting".
- AdamW (0.9, 0.999, weight decay 1e-2, eps 1e-8): diffusers' example.
- adapter none; with lora: rank 4, alpha = rank, lora lr 1e-4, the token for the first half of
  the steps: diffusers' `train_dreambooth_lora_sdxl_advanced.py` defaults (--rank 4,
  --learning_rate 1e-4, --train_text_encoder_ti_frac 0.5). Provisional: not yet measured on micro.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from styleprompt.diffusion.families import DEFAULT_MODEL, MICRO_MODEL
from styleprompt.diffusion.templates import DEFAULT_PREVIEW_PROMPT

# Training settings whose best value depends on the model; TrainConfig fills the ones a user left unset.
TRAINING_DEFAULTS: dict[str, float] = {"vectors": 4, "norm_cap": 0.0}
MODEL_TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    # The micro model's text encoder has 2 layers and 32 positions: four learned vectors outweighed the
    # prompt's one class word (starry token, 6 unseen classes x 2 seeds: class accuracy 0.33 with 4,
    # 0.75 with 1), and an uncapped vector grew to twice the length of any word while its direction
    # settled near the word "starry" (cosine 0.70); capped, the token's style retrieval@1 rose from 0.50
    # to 0.75 (docs/micro.md).
    MICRO_MODEL: {"vectors": 1, "norm_cap": 1.0},
}


def training_default(model: str, name: str) -> float:
    """The value of training setting `name` for `model` when the user gives none."""
    return MODEL_TRAINING_DEFAULTS.get(model, {}).get(name, TRAINING_DEFAULTS[name])


@dataclass
class TrainConfig:
    images: str
    token: str = "<my-style>"
    model: str = DEFAULT_MODEL
    output: str = "outputs/style-token"
    init_word: str = "painting"
    vectors: int = None  # type: ignore[assignment]  # None: the model's own (4; 1 for micro), set below
    # learned vectors stay within this x the longest word embedding's length (0: no cap; None: the
    # model's own: 0, or 1.0 on micro)
    norm_cap: float = None  # type: ignore[assignment]
    steps: int = 2000
    resolution: int | None = None  # None: the model's native size (512 on SD 1.5)
    batch_size: int = 1
    grad_accum: int = 4
    lr: float = 5e-3
    scale_lr: bool = False
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    learnable_property: str = "style"
    save_every: int | None = None  # None: every 250 steps, or steps/8 in a shorter run (see __post_init__)
    checkpoint_every: int | None = None  # None: every 500 steps, or steps/4 in a shorter run
    checkpoints_total_limit: int = 2
    preview_every: int = 250
    preview_prompt: str = DEFAULT_PREVIEW_PROMPT
    preview_steps: int = 25
    preview_guidance: float = 7.5
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    resume: str | None = None
    device: str | None = None
    # the validation loss (`validation.py`) every N steps (0: never; None: at every --save-every step,
    # so each embedding `pick` scores has one, or as often as saving's default when saving is off)
    validate_every: int | None = None
    # Pivotal tuning (issue 24; `lora.py`). "none": plain textual inversion, as before.
    adapter: str = "none"
    lora_rank: int = 4  # diffusers' advanced script's --rank default
    lora_alpha: float | None = None  # None: the rank (scale 1), as diffusers' scripts (`lora_scale_alpha`)
    lora_lr: float = 1e-4  # diffusers' advanced script's --learning_rate
    ti_fraction: float = 0.5  # the token trains for this fraction of the steps (its --train_text_encoder_ti_frac)
    # The LoRA joins after this fraction of the steps: 0 trains it all run (diffusers' advanced script);
    # ti_fraction 0.5 with lora_start 0.5 is the original pivotal tuning (Roich et al. 2021, cloneofsimo's
    # lora_pti): the token is inverted first, then frozen, and the LoRA tunes the model around that pivot.
    lora_start: float = 0.0
    lora_text_encoder: bool = False
    lora_blocks: str = "all"  # or "style": the block B-LoRA/InstantStyle name (lora.style_block)
    lora_conv: bool = False  # the resnets' convolutions too (kohya's LoCon): blocks without attention

    def __post_init__(self) -> None:
        """Intervals left unset scale down with a short run, so a 30-step smoke test still leaves
        embeddings/ and checkpoints/ for `pick` and `--resume` (250/500 would leave neither)."""
        if self.vectors is None:
            self.vectors = int(training_default(self.model, "vectors"))
        if self.norm_cap is None:
            self.norm_cap = training_default(self.model, "norm_cap")
        if self.save_every is None:
            self.save_every = min(250, max(1, self.steps // 8))
        if self.checkpoint_every is None:
            self.checkpoint_every = min(500, max(1, self.steps // 4))
        if self.validate_every is None:
            self.validate_every = self.save_every or min(250, max(1, self.steps // 8))

    @property
    def lora_scale_alpha(self) -> float:
        """The LoRA's alpha: the one asked for, else the rank (kept None in config.json, so a resume
        with another rank names only the rank)."""
        return float(self.lora_alpha) if self.lora_alpha is not None else float(self.lora_rank)

    def to_dict(self) -> dict:
        return asdict(self)
