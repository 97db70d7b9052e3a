"""Train an AdaIN decoder from a folder of content photos and a folder of style images.

The recipe is the published one (Huang & Belongie 2017; pytorch-AdaIN's train.py): images
resized to 512x512 and randomly cropped to 256, batch 8, Adam at lr 1e-4 with inverse decay
lr / (1 + 5e-5 * step), content weight 1, style weight 10; the content loss compares the
decoded image's relu4_1 with the AdaIN target, the style loss its channel mean/std at relu1_1,
relu2_1, relu3_1 and relu4_1 with the style's. Only the decoder learns; VGG stays frozen.

Why checkpoints as folders with a state.json written last: a run killed at any moment resumes
from the newest complete checkpoint (`--resume latest`), never from a half-written one.

    python -m classic.train_adain --content-dir coco/ --style-dir wikiart/ --vgg-weights vgg_normalised.pth --output runs/adain
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from classic.adain import ENCODER_LAYER, STYLE_LAYERS, blend_features, build_decoder, calc_mean_std, save_decoder
from classic.vgg import load_vgg19, read_state_dict
from styleprompt.plumbing.errors import SettingError, UserError, cli_message
from styleprompt.plumbing.files import atomic_path, write_text_atomic
from styleprompt.plumbing.images import list_images, load_image, pil_to_tensor

log = logging.getLogger(__name__)


@dataclass
class TrainAdaINConfig:
    content_dir: str
    style_dir: str
    output: str = "runs/adain"
    vgg_weights: str | None = None
    random_weights: bool = False
    iterations: int = 160_000
    batch_size: int = 8
    lr: float = 1e-4
    lr_decay: float = 5e-5
    content_weight: float = 1.0
    style_weight: float = 10.0
    resize: int = 512
    crop: int = 256
    save_every: int = 10_000
    resume: str | None = None
    device: str = "cpu"
    seed: int = 0
    show_progress: bool = True


class ImageFolder(torch.utils.data.Dataset):
    """Files of a folder, resized to resize x resize and randomly cropped (pytorch-AdaIN's transform)."""

    def __init__(self, folder: str, resize: int, crop: int) -> None:
        self.paths = list_images(folder)
        if not self.paths:
            raise UserError(f"no images in {folder}: put .jpg/.png/.webp files directly in it")
        self.resize, self.crop = resize, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            img = load_image(self.paths[index])
        except UserError as exc:  # one bad file in 80,000 must not end a day-long run
            log.warning("skipping %s", exc)
            img = Image.new("RGB", (self.resize, self.resize), (128, 128, 128))
        img = img.resize((self.resize, self.resize), Image.Resampling.BILINEAR)
        t = pil_to_tensor(img)[0]
        y = random.randint(0, self.resize - self.crop)
        x = random.randint(0, self.resize - self.crop)
        return t[:, y : y + self.crop, x : x + self.crop]


def _batches(dataset: ImageFolder, batch_size: int, seed: int):
    """An endless stream of random batches (sampling with replacement, like pytorch-AdaIN's)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=1 << 40, generator=generator)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=True)
    return iter(loader)


def adain_losses(vgg, decoder, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(content loss, style loss) of one batch, as in the AdaIN paper (eq. 11-13)."""
    with torch.no_grad():
        style_feats = vgg(style, STYLE_LAYERS)
        content_feat = vgg(content, [ENCODER_LAYER])[ENCODER_LAYER]
        style_stats = calc_mean_std(style_feats[ENCODER_LAYER])
        target = blend_features(content_feat, [style_stats], [1.0])
    output = decoder(target)
    out_feats = vgg(output, STYLE_LAYERS)
    loss_c = F.mse_loss(out_feats[ENCODER_LAYER], target)
    loss_s = torch.zeros((), device=content.device)
    for name in STYLE_LAYERS:
        o_mean, o_std = calc_mean_std(out_feats[name])
        s_mean, s_std = calc_mean_std(style_feats[name])
        loss_s = loss_s + F.mse_loss(o_mean, s_mean) + F.mse_loss(o_std, s_std)
    return loss_c, loss_s


def _checkpoints(output: Path) -> list[Path]:
    root = output / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: json.loads((p / "state.json").read_text())["step"])


def _save_checkpoint(output: Path, step: int, decoder, optimizer, config: TrainAdaINConfig, layout: str) -> Path:
    folder = output / "checkpoints" / f"step_{step:07d}"
    save_decoder(decoder, folder / "decoder.safetensors", layout, {"step": str(step)})
    with atomic_path(folder / "optimizer.pt") as tmp:
        torch.save(optimizer.state_dict(), tmp)
    write_text_atomic(folder / "state.json", json.dumps({"step": step, "config": asdict(config)}, indent=2))
    return folder


def train(config: TrainAdaINConfig) -> Path:
    """Run (or resume) training; returns the path of the final decoder.safetensors."""
    output = Path(config.output)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if config.crop > config.resize:
        raise SettingError("crop", f"{{setting}} {config.crop} is larger than --resize {config.resize}")
    contents = ImageFolder(config.content_dir, config.resize, config.crop)
    styles = ImageFolder(config.style_dir, config.resize, config.crop)
    vgg = load_vgg19(config.vgg_weights, random_weights=config.random_weights, device=config.device, seed=config.seed)
    decoder = build_decoder().to(config.device)
    decoder.train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    step = 0
    if config.resume:
        found = _checkpoints(output)
        folder = found[-1] if config.resume == "latest" and found else Path(config.resume)
        if config.resume == "latest" and not found:
            raise SettingError("resume", f"{{setting}} latest: no complete checkpoint in {output / 'checkpoints'}")
        if not (folder / "state.json").is_file():
            raise SettingError("resume", f"{{setting}} {folder}: not a complete checkpoint folder (no state.json)")
        decoder.load_state_dict(read_state_dict(folder / "decoder.safetensors", "decoder checkpoint"))
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=config.device, weights_only=True))
        step = json.loads((folder / "state.json").read_text())["step"]
        log.info("resumed from %s at step %d", folder, step)
    # Data order after a resume: reseeded from the step, so runs are reproducible per segment.
    content_iter = _batches(contents, config.batch_size, config.seed + step)
    style_iter = _batches(styles, config.batch_size, config.seed + step + 1)
    bar = None
    if config.show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=step, desc="AdaIN decoder", unit="step")
    while step < config.iterations:
        for group in optimizer.param_groups:
            group["lr"] = config.lr / (1.0 + config.lr_decay * step)
        content = next(content_iter).to(config.device)
        style = next(style_iter).to(config.device)
        loss_c, loss_s = adain_losses(vgg, decoder, content, style)
        loss = config.content_weight * loss_c + config.style_weight * loss_s
        if not torch.isfinite(loss):
            raise UserError(f"the loss became {float(loss)} at step {step + 1}: lower --lr and --resume latest")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(content=f"{float(loss_c):.3f}", style=f"{float(loss_s):.3f}")
        if config.save_every and step % config.save_every == 0 and step < config.iterations:
            _save_checkpoint(output, step, decoder, optimizer, config, vgg.layout)
    if bar is not None:
        bar.close()
    _save_checkpoint(output, step, decoder, optimizer, config, vgg.layout)
    return save_decoder(decoder, output / "decoder.safetensors", vgg.layout, {"step": str(step), "vgg": vgg.source})


def build_parser() -> argparse.ArgumentParser:
    d = TrainAdaINConfig(content_dir="", style_dir="")
    parser = argparse.ArgumentParser(prog="python -m classic.train_adain", description="Train an AdaIN decoder.")
    p = parser.add_argument
    p("--content-dir", required=True, help="folder of content photos (the paper: MS-COCO)")
    p("--style-dir", required=True, help="folder of paintings (the paper: WikiArt)")
    p("--output", default=d.output, help="run folder (default: %(default)s)")
    p(
        "--vgg-weights",
        default=None,
        help="VGG-19 file (vgg_normalised.pth or torchvision's); default: torch's hub cache",
    )
    p("--random-weights", action="store_true", help="random VGG (tests and demos only)")
    p("--iterations", type=int, default=d.iterations)
    p("--batch-size", type=int, default=d.batch_size)
    p("--lr", type=float, default=d.lr)
    p("--lr-decay", type=float, default=d.lr_decay)
    p("--content-weight", type=float, default=d.content_weight)
    p("--style-weight", type=float, default=d.style_weight)
    p("--resize", type=int, default=d.resize, help="images are resized to this square first (default: %(default)s)")
    p("--crop", type=int, default=d.crop, help="random crop size (default: %(default)s)")
    p("--save-every", type=int, default=d.save_every, help="checkpoint every N steps (default: %(default)s)")
    p("--resume", default=None, help="'latest' or a checkpoint folder")
    p("--device", default=d.device)
    p("--seed", type=int, default=d.seed)
    p("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = vars(args)
    values["show_progress"] = not values.pop("no_progress")
    try:
        path = train(TrainAdaINConfig(**values))
    except UserError as exc:
        print(f"error: {cli_message(exc)}", file=sys.stderr)
        return 2
    print(f"decoder: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
