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
  --learning_rate 1e-4, --train_text_encoder_ti_frac 0.5). On micro, figure e chose others
  (`MODEL_TRAINING_DEFAULTS` below): the token for 2/3 of the steps, then a conv LoRA at 3e-3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from styleprompt.diffusion.families import DEFAULT_MODEL, MICRO_MODEL
from styleprompt.diffusion.templates import DEFAULT_PREVIEW_PROMPT

# Training settings whose best value depends on the model; TrainConfig fills the ones a user left unset.
TRAINING_DEFAULTS: dict[str, float] = {
    "vectors": 4,
    "norm_cap": 0.0,
    # pivotal tuning: diffusers' train_dreambooth_lora_sdxl_advanced.py (--learning_rate 1e-4,
    # --train_text_encoder_ti_frac 0.5, the LoRA from the first step, attention projections only)
    "lora_lr": 1e-4,
    "ti_fraction": 0.5,
    "lora_start": 0.0,
    "lora_conv": False,
}
MODEL_TRAINING_DEFAULTS: dict[str, dict[str, float]] = {
    # The micro model's text encoder has 2 layers and 32 positions: four learned vectors outweighed the
    # prompt's one class word (starry token, 6 unseen classes x 2 seeds: class accuracy 0.33 with 4,
    # 0.75 with 1), and an uncapped vector grew to twice the length of any word while its direction
    # settled near the word "starry" (cosine 0.70); capped, the token's style retrieval@1 rose from 0.50
    # to 0.75 (docs/micro.md).
    # Pivotal tuning on micro (figure e, docs/micro.md): the token first, then a LoRA on the attention
    # and the resnets' convolutions (micro's 16x16 blocks have no attention) at 3e-3. Trained together
    # from the start, the LoRA took over what the token learns (starry r@1 0.75 -> 0.00); the attention
    # LoRA alone added nothing; at 1e-2 the pictures collapsed to the training classes.
    MICRO_MODEL: {
        "vectors": 1,
        "norm_cap": 1.0,
        "lora_lr": 3e-3,
        "ti_fraction": 2 / 3,
        "lora_start": 2 / 3,
        "lora_conv": True,
    },
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
    # None in the four below: the model's own (TRAINING_DEFAULTS, MODEL_TRAINING_DEFAULTS), set below
    lora_lr: float = None  # type: ignore[assignment]  # the LoRA's learning rate
    ti_fraction: float = None  # type: ignore[assignment]  # the token trains for this fraction of the steps
    # The LoRA joins after this fraction of the steps: 0 trains it all run (diffusers' advanced script);
    # ti_fraction 0.5 with lora_start 0.5 is the original pivotal tuning (Roich et al. 2021, cloneofsimo's
    # lora_pti): the token is inverted first, then frozen, and the LoRA tunes the model around that pivot.
    lora_start: float = None  # type: ignore[assignment]
    lora_text_encoder: bool = False
    lora_blocks: str = "all"  # or "style": the block B-LoRA/InstantStyle name (lora.style_block)
    lora_conv: bool = None  # type: ignore[assignment]  # the resnets' convolutions too (kohya's LoCon)

    def __post_init__(self) -> None:
        """Intervals left unset scale down with a short run, so a 30-step smoke test still leaves
        embeddings/ and checkpoints/ for `pick` and `--resume` (250/500 would leave neither)."""
        if self.vectors is None:
            self.vectors = int(training_default(self.model, "vectors"))
        if self.norm_cap is None:
            self.norm_cap = training_default(self.model, "norm_cap")
        for name in ("lora_lr", "ti_fraction"):
            if getattr(self, name) is None:
                setattr(self, name, float(training_default(self.model, name)))
        if self.lora_start is None:
            # never after the token's end: `--ti-fraction 0` (the LoRA alone) needs no --lora-start too
            self.lora_start = min(float(training_default(self.model, "lora_start")), self.ti_fraction)
        if self.lora_conv is None:
            self.lora_conv = bool(training_default(self.model, "lora_conv"))
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
