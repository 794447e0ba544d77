"""Do IP-Adapter's image encoder and laion's CLIP ViT-H/14 live in one space? (run by hand)

Remix's text diffs take captions through the text tower of
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K` and move an image embedding made by the image
encoder shipped in `h94/IP-Adapter` (`models/image_encoder`). That only means something if
h94's encoder *is* laion's vision tower. This script checks it with the real weights (they
must be in the Hugging Face cache, or reachable):

- the two vision towers give the same embeddings for the same pictures (cosine per picture);
- laion's text tower retrieves the right caption for each picture from h94's embeddings.

    python bench/ip_towers.py [--offline] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from studio.backend.models.families.sd15 import MODEL_SET as SD15
from studio.backend.models.ip_adapter import IP_ENCODER_SUBFOLDER

CAPTIONS = ["a red circle on a white background", "a blue square on a white background",
            "a yellow triangle on a white background", "a green star on a white background"]


def pictures() -> list[Image.Image]:
    out = []
    for colour, shape in (("red", "ellipse"), ("blue", "rectangle"), ("yellow", "polygon"),
                          ("green", "star")):
        im = Image.new("RGB", (224, 224), "white")
        d = ImageDraw.Draw(im)
        if shape == "polygon":
            d.polygon([(112, 30), (30, 190), (194, 190)], fill=colour)
        elif shape == "star":
            d.regular_polygon((112, 112, 90), 5, fill=colour)
        else:
            getattr(d, shape)((40, 40, 184, 184), fill=colour)
        out.append(im)
    return out


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    from transformers import (
        AutoConfig,
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionModelWithProjection,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--offline", action="store_true", help="only the Hugging Face cache")
    p.add_argument("--json", type=Path)
    p.add_argument("--h94", help="IP-Adapter repo or folder (default: h94/IP-Adapter)")
    p.add_argument("--laion", help="CLIP repo or folder (default: laion's ViT-H/14)")
    args = p.parse_args(argv)
    kw = {"local_files_only": args.offline}
    h94 = CLIPVisionModelWithProjection.from_pretrained(
        args.h94 or SD15.get("ip_adapter"), subfolder=IP_ENCODER_SUBFOLDER, **kw).eval()
    source = args.laion or SD15.get("ip_text")
    config = AutoConfig.from_pretrained(source, **kw)
    halves = []
    for cls, sub in ((CLIPVisionModelWithProjection, config.vision_config),
                     (CLIPTextModelWithProjection, config.text_config)):
        sub.projection_dim = config.projection_dim
        halves.append(cls.from_pretrained(source, config=sub, **kw).eval())
    vision, text = halves
    tok = CLIPTokenizer.from_pretrained(source, **kw)
    pixels = CLIPImageProcessor()(images=pictures(), return_tensors="pt").pixel_values
    a = torch.nn.functional.normalize(h94(pixel_values=pixels).image_embeds, dim=-1)
    b = torch.nn.functional.normalize(vision(pixel_values=pixels).image_embeds, dim=-1)
    ids = tok(CAPTIONS, padding=True, return_tensors="pt").input_ids
    t = torch.nn.functional.normalize(text(input_ids=ids).text_embeds, dim=-1)
    cosine = (a * b).sum(-1).tolist()
    retrieved = (a @ t.T).argmax(-1).tolist()
    result = {"towers_cosine": cosine, "min_cosine": min(cosine),
              "caption_retrieval_from_h94": float(np.mean([r == i for i, r in
                                                           enumerate(retrieved)]))}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
