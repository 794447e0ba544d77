"""Train the toy detector: a small Grounding DINO (transformers' architecture, the one
`IDEA-Research/grounding-dino-tiny` has) that finds "the blue square" in the toy world, so
text masks mean something offline.

    python -m toyworld.train_grounding [--steps 3000] [--out assets/toy]

Scenes come from the toy scene generator, so every phrase has its true boxes for free. Each
training text names one to three things, as users do: "the blue square" (that shape), "the
circle" (every circle), or several phrases separated by "." (each its own class). The loss
is transformers' own Grounding DINO loss (Hungarian matching, focal loss on the words, L1 and
GIoU on the boxes).
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import torch

from .scenes import COMMON_COLOURS, SHAPES, SIZE, random_scene

log = logging.getLogger(__name__)
ASSETS = Path("assets/toy")
FOLDER = "grounding-dino"
SEED_BASE = 8_000_000
WORDS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "an", "the",
         *COMMON_COLOURS, "purple", *SHAPES, "cross", "shape", "object")


def build() -> tuple[Any, Any]:
    """(untrained model, processor) of the toy detector."""
    from annotators.grounding import small_grounding_dino

    return small_grounding_dino(
        WORDS,
        backbone={"embed_dim": 24, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 2, 4],
                  "window_size": 4, "image_size": 128},
        text={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128, "max_position_embeddings": 64},
        image_sizes=(128, 128),
        d_model=64, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=128,
        decoder_ffn_dim=128, encoder_attention_heads=4, decoder_attention_heads=4,
        num_queries=20, num_feature_levels=4, max_text_len=64,
    )


def example(scene: Any, rng: random.Random) -> tuple[str, list[list[float]], list[int]]:
    """(text, target boxes as normalised cx, cy, w, h, the phrase index of each box)."""
    shapes = scene.shapes

    def norm(box: tuple[int, ...]) -> list[float]:
        x0, y0, x1, y1 = box
        return [(x0 + x1) / 2 / SIZE, (y0 + y1) / 2 / SIZE, (x1 - x0) / SIZE, (y1 - y0) / SIZE]

    kind = rng.random()
    if kind < 0.5:  # "the blue square": that one shape
        s = rng.choice(shapes)
        return f"the {s.colour} {s.kind}", [norm(s.box)], [0]
    if kind < 0.75:  # "the circle": every shape of that kind (maybe none)
        k = rng.choice(SHAPES)
        hits = [s for s in shapes if s.kind == k]
        return f"the {k}", [norm(s.box) for s in hits], [0] * len(hits)
    picked = rng.sample(shapes, rng.randint(1, len(shapes)))  # several phrases
    text = ". ".join(f"the {s.colour} {s.kind}" for s in picked)
    return text, [norm(s.box) for s in picked], list(range(len(picked)))


def train(steps: int, batch: int = 8, lr: float = 2e-4, seed: int = 0,
          init: Path | None = None) -> tuple[Any, Any]:
    """The trained detector and its processor; `init` continues from an exported one (its
    scenes follow on from seed + its steps are not tracked: pass another `seed`)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, processor = build()
    if init is not None:
        from transformers import GroundingDinoForObjectDetection

        model = GroundingDinoForObjectDetection.from_pretrained(init)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0, ema = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200)
        scenes = [random_scene(SEED_BASE + (seed * 100_000 + step) * batch + i)
                  for i in range(batch)]
        examples = [example(s, rng) for s in scenes]
        inputs = processor(images=[s.render() for s in scenes],
                           text=[e[0] + "." for e in examples], padding=True,
                           return_tensors="pt")
        labels = [{"boxes": torch.tensor(e[1], dtype=torch.float32).reshape(-1, 4),
                   "class_labels": torch.tensor(e[2], dtype=torch.long)} for e in examples]
        loss = model(**inputs, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("grounding step %d/%d loss %.3f (ema %.3f) %.0fs", step, steps,
                     loss.item(), ema, time.time() - t0)
    return model.eval(), processor


def export(model: Any, processor: Any, out: Path) -> Path:
    dest = out / FOLDER
    model.save_pretrained(dest, safe_serialization=True)
    processor.save_pretrained(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=ASSETS)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="continue from this exported detector")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    dest = export(*train(args.steps, args.batch, args.lr, args.seed, args.init), args.out)
    log.info("exported %s", dest)


if __name__ == "__main__":
    main()
