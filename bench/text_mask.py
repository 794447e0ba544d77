"""CPU (or GPU) time of a text mask at 512 px: the detector, then SAM on its boxes.

    .venv/bin/python bench/text_mask.py                 # real-size random weights
    .venv/bin/python bench/text_mask.py --family owlv2  # OWLv2 base (960 px) instead
    .venv/bin/python bench/text_mask.py --device cuda
    .venv/bin/python bench/text_mask.py --detector IDEA-Research/grounding-dino-tiny \\
        --sam path/to/sam_vit_b_01ec64.pth            # real weights (cached or downloaded)

Without weights, the detector is Grounding DINO's tiny architecture (Swin-T + BERT-base,
transformers' default GroundingDinoConfig) and SAM is ViT-B, both random, so the times are
representative while nothing is downloaded. `--family owlv2` times OWLv2's base
architecture instead (ViT-B/16 at 960 px, transformers' default Owlv2Config), the
alternative detector the annotator also loads. Reported: the first text mask on an image
(detector + SAM's image embedding + one mask per box) and a later one on the same image with
other words (detector again; SAM's embedding is cached, only its mask decoder runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.annotators import _photo  # noqa: E402

BOXES = 3  # masks made per text mask (the objects a request typically names)


def random_detector() -> Any:
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    from annotators.grounding import GroundingAnnotator

    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "the", "red", "ball",
             "green", "box", "dog", "cup"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    processor = GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(),
                                       tokenizer=tokenizer)
    return GroundingAnnotator(GroundingDinoForObjectDetection(GroundingDinoConfig()), processor)


def random_owlv2() -> Any:
    import tempfile

    import torch
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    from annotators.grounding import GroundingAnnotator
    from studio.backend.models.tokenizer_vocab import write_tokenizer

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp), ("a", "the", "red", "ball", "green", "box", "dog", "cup"))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=16)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(), tokenizer=tokenizer)
    config = Owlv2Config(vision_config={"image_size": 960})  # owlv2-base-patch16-ensemble
    return GroundingAnnotator(Owlv2ForObjectDetection(config), processor)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detector", help="detector folder or Hub id (default: random)")
    ap.add_argument("--family", choices=("grounding-dino", "owlv2"), default="grounding-dino",
                    help="the random detector's architecture (without --detector)")
    ap.add_argument("--sam", help="SAM checkpoint (default: random ViT-B)")
    args = ap.parse_args(argv)
    from annotators import get_annotator
    from bench.annotators import _random_real_size

    t0 = time.perf_counter()
    detector = (get_annotator("grounding", args.detector) if args.detector
                else random_owlv2() if args.family == "owlv2" else random_detector()
                ).to(args.device)
    sam = (get_annotator("sam", args.sam) if args.sam else _random_real_size("sam")
           ).to(args.device)
    load = time.perf_counter() - t0
    photo = _photo(args.size)

    def text_mask(text: str, image: Any) -> tuple[float, float]:
        t = time.perf_counter()
        found = detector.detect(image, text, threshold=0.0)[:BOXES]
        det = time.perf_counter() - t
        for obj in found:
            sam.annotate(image, box=obj["box"])
        return det, time.perf_counter() - t

    firsts, laters, dets = [], [], []
    for i in range(args.repeats):
        image = photo.copy()
        image[0, 0, 0] = i  # a new image each round: SAM embeds it again
        det, first = text_mask("the red ball", image)
        det2, later = text_mask("the green box. a cup", image)
        firsts.append(first)
        laters.append(later)
        dets += [det, det2]
    print(f"{args.detector or args.family}, {args.size} px, {BOXES} boxes per text mask, "
          f"device {args.device}, "
          f"load {load:.1f} s, median of {args.repeats}")
    print("| step | seconds |\n|---|---|")
    print(f"| detector alone | {statistics.median(dets):.2f} |")
    print(f"| first text mask on an image (detector + SAM embedding + masks) | "
          f"{statistics.median(firsts):.2f} |")
    print(f"| later text mask, same image (detector + SAM masks, embedding cached) | "
          f"{statistics.median(laters):.2f} |")


if __name__ == "__main__":
    main()
