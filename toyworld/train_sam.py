"""Train the toy SAM: a small segment_anything model that segments the toy world's shapes
from a click or a box, so the Edit tab's clicks mean something offline.

    python -m toyworld.train_sam [--steps 2500] [--out assets/toy]

Scenes come from the toy scene generator, whose shape masks are exact, so every prompt has its
true mask for free. The architecture is segment_anything's own (ViT image encoder, prompt
encoder, two-way mask decoder) at a 256 px input (the toy scenes are 64 px), read back from
the tensor shapes when the studio loads it, as a real SAM checkpoint is. The inputs go through
SamPredictor's own transform, so training sees what the annotator feeds it.

Prompts, as the studio sends them: one click inside a shape (SAM's 3 candidate masks; the
loss takes the best of them, as in the SAM paper, and the IoU head learns to rank them), a
box around it (one mask), or a click plus its box. Loss: 20 x focal + dice on the mask
logits, plus MSE of the predicted IoU.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from .scenes import SIZE, random_scene

log = logging.getLogger(__name__)
ASSETS = Path("assets/toy")
SAM_FILE = Path("sam") / "sam_toy.safetensors"
SEED_BASE = 7_000_000  # training scene seeds (evaluation uses others)


def toy_sam_config() -> Any:
    from annotators.sam import SamConfig

    return SamConfig(
        encoder_embed_dim=64, encoder_depth=4, encoder_num_heads=4,
        encoder_global_attn_indexes=(1, 3), window_size=4, image_size=256, patch_size=16,
        prompt_embed_dim=64, mask_in_chans=16, decoder_depth=2, decoder_mlp_dim=256,
        decoder_num_heads=8, iou_head_hidden_dim=64,
    )


def prompt_for(scene: Any, index: int, rng: random.Random) -> tuple[Any, Any, np.ndarray]:
    """(points [[x, y]] or None, box [x0, y0, x1, y1] or None, true mask) for one shape."""
    mask = scene.mask(index)
    ys, xs = np.nonzero(mask)
    kind = rng.choice(["click", "click", "box", "both"])
    points = box = None
    if kind in ("click", "both"):
        j = rng.randrange(len(xs))
        points = [[float(xs[j]) + rng.random() - 0.5, float(ys[j]) + rng.random() - 0.5]]
    if kind in ("box", "both"):
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        jitter = [rng.uniform(-1.5, 1.5) for _ in range(4)]
        box = [float(np.clip(v + d, 0, SIZE)) for v, d in zip((x0, y0, x1, y1), jitter,
                                                               strict=True)]
    return points, box, mask


def losses(sam: Any, predictor: Any, images: list[np.ndarray],
           prompts: list[tuple[Any, Any, np.ndarray]]) -> torch.Tensor:
    """The batch loss (focal x 20 + dice, best of the candidates for a lone click; + IoU)."""
    tf = predictor.transform
    batch = torch.stack([torch.as_tensor(tf.apply_image(im)).permute(2, 0, 1) for im in images])
    embeddings = sam.image_encoder(sam.preprocess(batch.float()))
    total = torch.zeros(())
    for i, (points, box, mask) in enumerate(prompts):
        pts = None
        if points is not None:
            coords = torch.as_tensor(tf.apply_coords(np.array(points), (SIZE, SIZE)),
                                     dtype=torch.float32)[None]
            pts = (coords, torch.ones(1, 1, dtype=torch.int))
        bx = None if box is None else torch.as_tensor(
            tf.apply_boxes(np.array(box), (SIZE, SIZE)), dtype=torch.float32)
        sparse, dense = sam.prompt_encoder(points=pts, boxes=bx, masks=None)
        multi = box is None
        low, iou = sam.mask_decoder(image_embeddings=embeddings[i:i + 1],
                                    image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse,
                                    dense_prompt_embeddings=dense, multimask_output=multi)
        logits = sam.postprocess_masks(low, tf.get_preprocess_shape(SIZE, SIZE, 256),
                                       (SIZE, SIZE))[0]  # (k, 64, 64)
        target = torch.as_tensor(mask, dtype=torch.float32)[None].expand_as(logits)
        prob = logits.sigmoid()
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_t = prob * target + (1 - prob) * (1 - target)
        focal = (ce * (1 - p_t) ** 2 * (0.25 * target + 0.75 * (1 - target))).mean((1, 2))
        inter = (prob * target).sum((1, 2))
        dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        per_mask = 20 * focal + dice
        with torch.no_grad():
            hard = (logits > 0).float()
            true_iou = (hard * target).sum((1, 2)) / ((hard + target).clamp(max=1).sum((1, 2))
                                                       + 1e-6)
        total = total + per_mask.min() + F.mse_loss(iou[0], true_iou)
    return total / len(prompts)


def train(steps: int, batch: int = 8, lr: float = 3e-4, seed: int = 0) -> Any:
    """The trained toy SAM (fp32, eval mode)."""
    from segment_anything import SamPredictor

    from annotators.sam import build_sam

    torch.manual_seed(seed)
    rng = random.Random(seed)
    sam = build_sam(toy_sam_config()).train()
    predictor = SamPredictor(sam)
    opt = torch.optim.AdamW(sam.parameters(), lr=lr, weight_decay=1e-2)
    t0, ema = time.time(), None
    for step in range(steps):
        for g in opt.param_groups:  # warm-up, then cosine decay
            g["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * step / steps))
        scenes = [random_scene(SEED_BASE + step * batch + i) for i in range(batch)]
        images = [np.asarray(s.render()) for s in scenes]
        prompts = [prompt_for(s, rng.randrange(len(s.shapes)), rng) for s in scenes]
        loss = losses(sam, predictor, images, prompts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            log.info("sam step %d/%d loss %.4f (ema %.4f) %.0fs", step, steps, loss.item(), ema,
                     time.time() - t0)
    return sam.eval()


def export(sam: Any, out: Path) -> Path:
    """fp16 safetensors, the layout the SAM annotator loads (architecture from the shapes)."""
    from safetensors.torch import save_file

    path = out / SAM_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in sam.state_dict().items()},
              str(path), metadata={"format": "pt", "note": "toy-world SAM"})
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", type=Path, default=ASSETS)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    path = export(train(args.steps, args.batch), args.out)
    log.info("exported %s (%.0f kB)", path, path.stat().st_size / 1e3)


if __name__ == "__main__":
    main()
