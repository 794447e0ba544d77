"""Train the toy detector: a small OWL-ViT (transformers' `OwlViTForObjectDetection`, an
`AutoModelForZeroShotObjectDetection` like the real default) that finds "the blue square"
in the toy world, so text masks mean something offline.

    python -m toyworld.train_grounding [--steps 6000] [--out assets/toy]

Why OWL-ViT and not a small Grounding DINO (the real default's architecture): Grounding DINO
is a DETR, trained by Hungarian matching of a few decoder queries, and DETRs converge slowly.
Here a miniature one trained with transformers' own loss reached only 30% of the toy bar's
cases after 3500 steps (11 min) and 20% after 5000 more (commit ea8e236). OWL-ViT predicts a
box and a phrase score at every image patch, so it can be trained densely (every patch of a
shape learns that shape's box and which phrases name it; FCOS-style), which this toy world
learns in minutes. The annotator loads both families through the same code.

Scenes come from the toy scene generator, so every phrase has its true masks and boxes for
free. Each image gets a few queries, as users write them: "the blue square", "blue square",
"the square" (every square), "the blue shape", and phrases that name nothing in the scene
(the hard negatives: "the blue circle" beside a blue square and a red circle).
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import COLOURS, COMMON_COLOURS, SHAPES, SIZE, Scene, random_scene

log = logging.getLogger(__name__)
ASSETS = Path("assets/toy")
FOLDER = "detector"
SEED_BASE = 8_000_000
PATCH = 4  # 16 x 16 patches on a 64 px scene: the smallest shape (12 px) covers 9
QUERIES = 6  # phrases per training image
CONFUSABLE = 0.5  # share of scenes made to hold look-alikes (see `confusable`)
HARD = 4.0  # weight of a named-nothing phrase's loss on a shape's patches
# The detector's words; others tokenize character by character (and name nothing it knows)
WORDS = ("a", "an", "the", "and", "shape", "object", *COLOURS, *SHAPES, "cross")


def build(seed: int = 0) -> tuple[Any, Any]:
    """(untrained model, processor) of the toy detector: a 4-layer ViT over 4 px patches and
    a 2-layer CLIP text tower over a small BPE vocabulary, both 64 wide."""
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    from studio.backend.models.tokenizer_vocab import write_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tokenizer(Path(tmp), WORDS)
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=16)
    eos = tokenizer.eos_token_id  # the highest id: OWL-ViT pools the text at argmax(ids)
    assert eos == vocab_size - 1, "OWL-ViT pools at the highest id: it must be the end token"
    config = OwlViTConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": 16, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 4,
                       "num_attention_heads": 4, "image_size": SIZE, "patch_size": PATCH},
        projection_dim=64,
    )
    torch.manual_seed(seed)
    images = OwlViTImageProcessor(size={"height": SIZE, "width": SIZE},
                                  crop_size={"height": SIZE, "width": SIZE})
    model = OwlViTForObjectDetection(config)
    with torch.no_grad():
        # transformers initialises the heads' Linear layers at std 1 (made for loading
        # weights, not training): boxes start at +-200 before the sigmoid and never move.
        # PyTorch's default init instead, and the box head's last layer at zero, so every
        # patch starts at its grid cell's box (OWL-ViT's box bias)
        for layer in (*model.box_head.modules(), *model.class_head.modules()):
            if isinstance(layer, torch.nn.Linear):
                layer.reset_parameters()
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
        # logits = (cos + shift) * scale start near -3 (p ~ 0.05), the prior of a patch
        # showing what a phrase names
        head = model.class_head
        for layer, bias in ((head.logit_shift, -0.3), (head.logit_scale, 9.0)):
            layer.weight.zero_()
            layer.bias.fill_(bias)
    return model, OwlViTProcessor(image_processor=images, tokenizer=tokenizer)


# ------------------------------------------------------------------------------ examples

def phrase(colour: str | None, kind: str | None, rng: random.Random) -> str:
    """A query as users write it: "the blue square", "blue square", "the square", ..."""
    noun = kind or rng.choice(("shape", "object"))
    words = " ".join(w for w in (colour, noun) if w)
    return words if rng.random() < 0.2 else f"{rng.choice(('the', 'the', 'a'))} {words}"


def queries(scene: Scene, rng: random.Random, n: int = QUERIES
            ) -> list[tuple[str, tuple[str | None, str | None]]]:
    """`n` (text, (colour, kind)) queries for a scene: one naming each shape, then others
    (the shape's kind or colour alone, and near misses that name nothing there)."""
    present = [(s.colour, s.kind) for s in scene.shapes]
    out = []
    for colour, kind in present:
        out.append((colour, kind))
    while len(out) < n:
        r = rng.random()
        colour, kind = rng.choice(present)
        if r < 0.15:
            out.append((None, kind))
        elif r < 0.25:
            out.append((colour, None))
        elif r < 0.8:  # a near miss: one word changed
            if rng.random() < 0.5:
                out.append((rng.choice([c for c in COMMON_COLOURS if c != colour]), kind))
            else:
                out.append((colour, rng.choice([k for k in SHAPES if k != kind])))
        else:
            out.append((rng.choice(COMMON_COLOURS), rng.choice(SHAPES)))
    rng.shuffle(out)
    return [(phrase(c, k, rng), (c, k)) for c, k in out[:n]]


def matches(shape: Any, what: tuple[str | None, str | None]) -> bool:
    colour, kind = what
    return (colour is None or shape.colour == colour) and (kind is None or shape.kind == kind)


def targets(scene: Scene, what: list[tuple[str | None, str | None]]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dense targets over the 16 x 16 patches: (labels [P, Q]: 1 where a patch is mostly
    inside a shape the query names, 0 where it is outside everything or in the last row or
    column, -1 (ignored) at shapes' borders; box weight [P]; boxes [P, 4] as normalised cx,
    cy, w, h of the patch's shape; the patches' cover of their shape [P])."""
    grid = SIZE // PATCH
    cover = np.zeros((len(scene.shapes), grid * grid), np.float32)
    for i in range(len(scene.shapes)):
        m = scene.mask(i).astype(np.float32)
        cover[i] = m.reshape(grid, PATCH, grid, PATCH).mean(axis=(1, 3)).reshape(-1)
    owner = cover.argmax(0)
    best = cover.max(0) if len(scene.shapes) else np.zeros(grid * grid, np.float32)
    labels = np.zeros((grid * grid, len(what)), np.float32)
    for q, w in enumerate(what):
        named = np.array([matches(s, w) for s in scene.shapes], bool)
        inside = (best >= 0.5) & named[owner]
        labels[inside, q] = 1.0
        labels[(best > 0) & (best < 0.5), q] = -1.0
    # OWL-ViT biases each patch's box centre to its cell's far corner, which is the image's
    # edge in the last row and column: the sigmoid there is saturated, so those patches
    # cannot move their boxes onto a shape. They learn never to fire instead (every shape
    # also covers inner patches, being 12 px at least)
    edge = np.zeros((grid, grid), bool)
    edge[-1, :] = edge[:, -1] = True
    edge = edge.reshape(-1)
    labels[edge] = 0.0
    boxes = np.zeros((grid * grid, 4), np.float32)
    for p in range(grid * grid):
        if best[p] > 0:
            x0, y0, x1, y1 = scene.shapes[owner[p]].box
            boxes[p] = [(x0 + x1) / 2 / SIZE, (y0 + y1) / 2 / SIZE, (x1 - x0) / SIZE,
                        (y1 - y0) / SIZE]
    return labels, ((best >= 0.25) & ~edge).astype(np.float32), boxes, best


def confusable(scene: Scene, rng: random.Random) -> Scene:
    """The scene with one shape made to share its kind or its colour with another (a red and
    a blue square; a red circle and a red square), so the detector must read both words to
    tell them apart. Only kinds and colours change: the shapes still do not overlap."""
    shapes = list(scene.shapes)
    if len(shapes) < 2:
        return scene
    i, j = rng.sample(range(len(shapes)), 2)
    if rng.random() < 0.5:
        colour = rng.choice([c for c in COMMON_COLOURS if c != shapes[i].colour])
        shapes[j] = replace(shapes[j], kind=shapes[i].kind, colour=colour)
    else:
        kind = rng.choice([k for k in SHAPES if k != shapes[i].kind])
        shapes[j] = replace(shapes[j], kind=kind, colour=shapes[i].colour)
    return Scene(shapes, scene.size)


def _noisy(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The rendered scene with mild pixel noise and a small brightness shift (what the toy
    diffusion's pictures look like, roughly), so the detector does not need exact colours."""
    arr = np.asarray(scene.render(), np.float32)
    arr = arr * rng.uniform(0.9, 1.1) + rng.normal(0, rng.uniform(0, 8), arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows of cx, cy, w, h boxes."""
    def corners(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :2] - x[:, 2:] / 2, x[:, :2] + x[:, 2:] / 2], 1)

    a, b = corners(a), corners(b)
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1)
    union = area - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    return inter / union - (hull - union) / hull


# ------------------------------------------------------------------------------ training

def train(steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0) -> tuple[Any, Any]:
    """The trained detector and its processor."""
    model, processor = build(seed)
    model.train()
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    t0, ema = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:  # warm up, then cosine down to a tenth
            warm = min(1.0, (step + 1) / 100)
            g["lr"] = lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        scenes = [random_scene(SEED_BASE + (seed * 100_000 + step) * batch + i)
                  for i in range(batch)]
        scenes = [confusable(s, rng) if rng.random() < CONFUSABLE else s for s in scenes]
        qs = [queries(s, rng) for s in scenes]
        inputs = processor(images=[_noisy(s, nrng) for s in scenes],
                           text=[[t for t, _ in q] for q in qs], return_tensors="pt")
        labels, weight, boxes, cover = (torch.from_numpy(np.stack(x)) for x in zip(
            *[targets(s, [w for _, w in q]) for s, q in zip(scenes, qs, strict=True)],
            strict=True))
        out = model(**inputs)
        known = labels >= 0
        # a shape the phrase does not name is the hard negative: it counts HARD times
        hard = 1.0 + (HARD - 1.0) * ((labels == 0) & (cover[..., None] >= 0.5)).float()
        cls = F.binary_cross_entropy_with_logits(out.logits[known], labels[known],
                                                 weight=hard[known])
        sel = weight.reshape(-1) > 0
        pred, true = out.pred_boxes.reshape(-1, 4)[sel], boxes.reshape(-1, 4)[sel]
        box = F.l1_loss(pred, true) + (1 - _giou(pred, true)).mean()
        loss = 5 * cls + box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("detector step %d/%d loss %.3f (ema %.3f; words %.3f, boxes %.3f) %.0fs",
                     step, steps, loss.item(), ema, cls.item(), box.item(), time.time() - t0)
    return model.eval(), processor


def export(model: Any, processor: Any, out: Path) -> Path:
    dest = out / FOLDER
    model.save_pretrained(dest, safe_serialization=True)
    processor.save_pretrained(dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", type=Path, default=ASSETS)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    dest = export(*train(args.steps, args.batch, args.lr, args.seed), args.out)
    log.info("exported %s", dest)


if __name__ == "__main__":
    main()
