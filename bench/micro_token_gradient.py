"""Where does a style token's first step go? The descent direction at the init word, on the micro model.

    python bench/micro_token_gradient.py --style sketch            # the shipped model
    python bench/micro_token_gradient.py --style sketch --model-dir BUILD/model

Textual inversion moves the token by gradient descent from "painting"; it can only find a style
whose word lies downhill. For a trained style word the answer is known, so this measures, from
the trainer's own loss on 8 world pictures of the style (those of bench/micro_ti.py's figure b),
per quarter of the noise schedule: the mean gradient's length, its consistency (mean over the
spread of single-sample gradients) and the cosine between the descent direction and the direction
from the init word to the style word; then the words the overall descent points toward. A
cosine near zero or below means the token will wander off rather than learn the style.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--style", default="sketch", help="a trained style word of the micro model")
    parser.add_argument("--init-word", default="painting")
    parser.add_argument("--samples", type=int, default=32, help="single-sample gradients per quarter (default 32)")
    parser.add_argument("--model-dir", default=None, help="another micro model folder (default: the shipped one)")
    args = parser.parse_args()
    import styleprompt.micro as micro

    if args.model_dir:  # `--model micro` loads from families.MICRO_MODEL_DIR
        from styleprompt.diffusion import families

        micro.MODEL_DIR = families.MICRO_MODEL_DIR = Path(args.model_dir)
    if args.style not in micro.STYLE_WORDS:
        parser.error(f"--style must be one of the trained style words: {', '.join(micro.STYLE_WORDS)}")
    from styleprompt.diffusion.config import TrainConfig
    from styleprompt.diffusion.training import StyleTokenTrainer
    from styleprompt.micro import world
    from styleprompt.micro.build_config import DEFAULT_STYLES
    from styleprompt.micro.world_data import check_style_folder
    from styleprompt.plumbing.images import load_image

    work = Path(tempfile.mkdtemp(prefix="token_gradient-"))
    painting = load_image(check_style_folder(DEFAULT_STYLES) / micro.STYLE_WORDS[args.style])
    world.write_pictures(
        world.make_pictures(painting, ["lighthouse", "house", "city", "tree"], 8, seed=31_337), work / "art"
    )
    cfg = TrainConfig(
        images=str(work / "art"), token="<t>", model="micro", output=str(work / "run"), init_word=args.init_word
    )
    trainer = StyleTokenTrainer(cfg)
    tokenizer, table = trainer.pipe.tokenizer, trainer.parts[0].table.weight.detach().float()

    def row(word: str) -> torch.Tensor:
        return table[tokenizer(word, add_special_tokens=False).input_ids[0]]

    start, target = row(args.init_word), row(args.style)
    toward = F.normalize(target - start, dim=0)
    quarters: dict[int, list[torch.Tensor]] = {q: [] for q in range(4)}
    seed = 0
    while min(len(g) for g in quarters.values()) < args.samples:
        trainer.generator.manual_seed(20_000 + seed)
        seed += 1
        batch = trainer.draw_batch()
        q = int(batch.timesteps[0]) * 4 // trainer.noise_scheduler.config.num_train_timesteps
        if len(quarters[q]) >= args.samples:
            continue
        trainer.parts[0].vectors.grad = None
        trainer.loss_on(batch).backward()
        quarters[q].append(trainer.parts[0].vectors.grad[0].detach().clone())
    print(f"{args.style}: descent from {args.init_word!r} ({args.samples} single-sample gradients per quarter)")
    print("timesteps   |mean g|   consistency   cos(descent, word - init)")
    for q, grads in quarters.items():
        g = torch.stack(grads)
        mean = g.mean(0)
        consistency = mean.norm() / (g - mean).norm(dim=1).mean()
        cos = F.cosine_similarity(-mean, toward, dim=0)
        print(f"{q * 250:>3}-{q * 250 + 249:<6}  {mean.norm():.2e}   {consistency:.2f}          {cos:+.2f}")
    descent = -torch.cat([torch.stack(g) for g in quarters.values()]).mean(0)
    cos_all = F.cosine_similarity(descent, toward, dim=0)
    nearest = F.cosine_similarity(descent[None], table - start, dim=1).topk(6)
    words = ", ".join(f"{tokenizer.decode([int(i)])!r} {float(c):.2f}" for c, i in zip(nearest.values, nearest.indices))
    print(f"all         cos(descent, word - init) {cos_all:+.2f}; the descent points toward: {words}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
