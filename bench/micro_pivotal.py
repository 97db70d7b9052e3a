"""A first probe of pivotal tuning on the micro model (issue 24): plain token vs token + LoRA.

    python bench/micro_pivotal.py the_scream.jpg '{"plain": {}, "pivotal": {"adapter": "lora"}}' /tmp/probe [steps]

Trains each variant (TrainConfig overrides as JSON) on 8 world pictures of one painting (classes
lighthouse, house, city, tree; seed 31337), paints boat, fish, flower, bird x seeds 0, 1 (DDIM 20
steps), and prints per variant the style judge's rank of the painting among the 19 (r@1, r@3, mean
rank), the mean style similarity to it, and the class judge's accuracy; a LoRA variant is scored
a second time with its token alone (the LoRA not applied). The test that asserts the margin is
tests/test_lora.py::test_pivotal_tuning_beats_a_plain_token_on_a_held_out_painting. Figure e of
bench/micro_ti.py (every style, every held-out painting, leakage, time, size) is still to come.
A fifth argument only re-scores runs already in the folder.
"""

import json
import sys
import time
from pathlib import Path

import torch

from styleprompt.diffusion.config import TrainConfig
from styleprompt.diffusion.generate import load_embeddings
from styleprompt.diffusion.lora import load_loras
from styleprompt.diffusion.models import load_pipeline
from styleprompt.diffusion.training import train
from styleprompt.micro import world
from styleprompt.micro.judges import StyleJudge
from styleprompt.plumbing.images import load_image

painting = sys.argv[1]
variants = json.loads(sys.argv[2])
root = Path(sys.argv[3])
root.mkdir(parents=True, exist_ok=True)
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 150
art = root / "art"
if not art.exists():
    pics = world.make_pictures(
        load_image(Path("../shared/data/style") / painting), ["lighthouse", "house", "city", "tree"], 8, seed=31_337
    )
    world.write_pictures(pics, art)
judge = StyleJudge()
classes, seeds = ["boat", "fish", "flower", "bird"], [0, 1]
target = judge.names.index(painting)


def score(name, emb, lora):
    loaded = load_pipeline("micro", device="cpu")
    load_embeddings(loaded, [str(emb)])
    if lora:
        load_loras(loaded, [str(lora)])
    prompts = [f"a <t> style of a {c}" for c in classes for _ in seeds]
    gens = [torch.Generator().manual_seed(s) for _ in classes for s in seeds]
    with torch.no_grad():
        imgs = loaded.pipe(prompt=prompts, generator=gens, num_inference_steps=20).images
    v = judge.vectors_of(imgs)
    ranks = judge.ranks(v, painting)
    sim = judge.similarities(v)[:, target]
    from styleprompt.micro.judges import classify

    predicted = classify(imgs)
    wanted = [c for c in classes for _ in seeds]
    out = dict(
        class_acc=sum(p == w for p, w in zip(predicted, wanted)) / len(wanted),
        name=name,
        r1=float((ranks == 1).float().mean()),
        r3=float((ranks <= 3).float().mean()),
        mean_rank=float(ranks.float().mean()),
        sim=float(sim.mean()),
        ranks=ranks.tolist(),
    )
    print(json.dumps(out), flush=True)
    return out


only_score = len(sys.argv) > 5
for name, extra in variants.items():
    if only_score:
        r = root / name
        score(
            name,
            r / "learned_embeds.safetensors",
            r / "pytorch_lora_weights.safetensors" if (r / "pytorch_lora_weights.safetensors").exists() else None,
        )
        if (r / "pytorch_lora_weights.safetensors").exists():
            score(name + "-token-without-lora", r / "learned_embeds.safetensors", None)
        continue
    t = time.time()
    torch.manual_seed(0)
    r = train(
        TrainConfig(
            images=str(art),
            token="<t>",
            model="micro",
            output=str(root / name),
            steps=steps,
            save_every=0,
            checkpoint_every=0,
            preview_every=0,
            device="cpu",
            **extra,
        )
    )
    print(name, "train s", round(time.time() - t, 1), flush=True)
    score(name, r.embedding_path, r.lora_path)
    if r.lora_path:
        score(name + "-token-without-lora", r.embedding_path, None)
