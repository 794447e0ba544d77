"""Open-vocabulary detection from words (Grounding DINO, or OWL-ViT / OWLv2, through
transformers): "the dog" -> boxes with labels and scores, in the image's own pixels. Its
boxes are the prompts the SAM annotator turns into masks (the Grounded-SAM / Inpaint
Anything pattern).

Why transformers' `AutoModelForZeroShotObjectDetection` and not the `groundingdino` package:
`IDEA-Research/grounding-dino-tiny` loads through `from_pretrained` (safetensors), needs no
compiled CUDA ops, and has a config, so the `tiny` set can save a miniature Grounding DINO in
the same layout and load it with this same code.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .base import Annotator, AnnotatorOutput, ImageInput, check_number, load_image
from .errors import AnnotatorInputError, MissingWeightsError, WeightsFormatError
from .weights import transformers_config

DEFAULT_GROUNDING_SOURCE = "IDEA-Research/grounding-dino-tiny"
DETECTOR_TYPES = ("grounding-dino", "owlvit", "owlv2")  # transformers' model_type names
MAX_PHRASES = 16  # phrases one request may name ("a cat. a dog. ...")
MAX_TEXT_CHARS = 500
NMS_IOU = 0.5  # boxes of one label overlapping more than this are one object


# Grounding DINO finds phrase boundaries by BERT-base-uncased's token ids ([CLS] 101,
# [SEP] 102, "." 1012, "?" 1029; transformers' SPECIAL_TOKENS), so a small vocabulary must
# keep those ids: `bert_style_vocab` puts its words after them.
BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012,
            "?": 1029}


def bert_style_vocab(words: tuple[str, ...]) -> dict[str, int]:
    """A WordPiece vocabulary of `words` with BERT's special-token ids (gaps: [unusedN])."""
    vocab = dict(BERT_IDS)
    extra = [w for w in words if w not in vocab]
    size = max(BERT_IDS.values()) + 1 + len(extra)
    taken = set(vocab.values())
    free = iter(i for i in range(size) if i not in taken)
    for word in extra:  # the words take the lowest free ids; the rest stay unused
        vocab[word] = next(free)
    for i in free:
        vocab[f"[unused{i}]"] = i
    return vocab


def small_grounding_dino(words: tuple[str, ...], backbone: dict[str, Any],
                         text: dict[str, Any], image_sizes: tuple[int, int],
                         **detector: Any) -> tuple[Any, Any]:
    """(untrained model, processor) of a miniature Grounding DINO in transformers' layout:
    a Swin `backbone`, a BERT `text` encoder over `words` (BERT's special-token ids kept),
    images resized to `image_sizes` (shortest, longest edge): the tiny random set's detector."""
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    vocab = bert_style_vocab(words)
    config = GroundingDinoConfig(
        backbone_config={"model_type": "swin", "out_features": ["stage2", "stage3", "stage4"],
                         **backbone},
        text_config={"model_type": "bert", "vocab_size": len(vocab), **text}, **detector)
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    images = GroundingDinoImageProcessor(
        size={"shortest_edge": image_sizes[0], "longest_edge": image_sizes[1]})
    return (GroundingDinoForObjectDetection(config),
            GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer))


def phrases_of(text: Any) -> list[str]:
    """The phrases of a detection query: separated by "." (Grounding DINO's own format),
    lower case, blanks dropped. A clear error for empty or oversized text."""
    if not isinstance(text, str) or not text.strip():
        raise AnnotatorInputError(
            "Say what to select: e.g. 'the dog', or several things as 'a cat. a bowl'."
        )
    if len(text) > MAX_TEXT_CHARS:
        raise AnnotatorInputError(
            f"The text is {len(text)} characters; at most {MAX_TEXT_CHARS} are accepted."
        )
    phrases = [p.strip().lower() for p in text.replace("\n", ".").split(".")]
    phrases = [p for p in phrases if p]
    if not phrases:
        raise AnnotatorInputError("The text names nothing to select: e.g. 'the dog'.")
    if len(phrases) > MAX_PHRASES:
        raise AnnotatorInputError(
            f"The text names {len(phrases)} things; at most {MAX_PHRASES} at once."
        )
    return phrases


class GroundingAnnotator(Annotator):
    """Boxes for phrases; `annotate` draws them (a preview), `detect` returns them.

    Two detector families load: Grounding DINO (the default; one text of "."-separated
    phrases, scored per word) and OWL-ViT / OWLv2 (one query per phrase, a box at every
    image patch; the toy world's detector). Overlapping boxes of one label are merged by
    non-maximum suppression in both, so one object gives one box."""

    name = "grounding"
    default_source = DEFAULT_GROUNDING_SOURCE

    def __init__(self, model: Any, processor: Any) -> None:
        super().__init__()
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
    ) -> GroundingAnnotator:
        """Load a Grounding DINO or OWL-ViT/OWLv2 detector and its processor from a folder
        or a Hub repo."""
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        source = os.fspath(path_or_repo or DEFAULT_GROUNDING_SOURCE)
        kw: dict[str, Any] = {"cache_dir": os.fspath(cache_dir) if cache_dir else None,
                              "local_files_only": local_files_only}
        config = transformers_config(
            source, kw, role="grounding", example=DEFAULT_GROUNDING_SOURCE,
            needs="Selecting by words needs the detector",
            files="config.json, model.safetensors and its processor")
        if getattr(config, "model_type", None) not in DETECTOR_TYPES:
            raise WeightsFormatError(
                f"'{source}' is a {type(config).__name__.removesuffix('Config')} model, not a "
                f"detector from words: use Grounding DINO (e.g. {DEFAULT_GROUNDING_SOURCE}) "
                "or OWL-ViT / OWLv2 (e.g. google/owlv2-base-patch16-ensemble)."
            )
        try:  # safetensors (or a weights-only .bin): transformers never unpickles here
            model = AutoModelForZeroShotObjectDetection.from_pretrained(source, config=config,
                                                                        **kw)
            processor = AutoProcessor.from_pretrained(source, **kw)
        except OSError as err:
            raise MissingWeightsError(
                f"The detector weights or processor of '{source}' are missing or unreadable "
                f"({err})."
            ) from err
        return cls(model, processor)

    @property
    def family(self) -> str:
        """transformers' model_type of the detector: grounding-dino, owlvit or owlv2."""
        return getattr(getattr(self.model, "config", None), "model_type", "grounding-dino")

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> GroundingAnnotator:
        self.model.to(device)
        return self

    def detect(self, image: ImageInput, text: Any, threshold: Any = 0.3,
               text_threshold: Any = None) -> list[dict[str, Any]]:
        """Objects the phrases of `text` name: `{box: [x0, y0, x1, y1], label, score}` in the
        image's pixels, best first. `threshold` is the box score to keep (0..1);
        `text_threshold` (default: the same) the score a word needs to name the label
        (Grounding DINO only)."""
        arr = load_image(image)
        phrases = phrases_of(text)
        threshold = check_number(threshold, "threshold", 0.0, 1.0)
        text_threshold = threshold if text_threshold is None else check_number(
            text_threshold, "text threshold", 0.0, 1.0)
        h, w = arr.shape[:2]
        if self.family == "grounding-dino":
            result, labels = self._grounding_dino(arr, phrases, threshold, text_threshold)
        else:
            result, labels = self._owl(arr, phrases, threshold)
        found = []
        for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(),
                                     labels, strict=False):
            x0, y0, x1, y1 = (float(np.clip(v, 0, lim)) for v, lim in zip(box, (w, h, w, h),
                                                                            strict=True))
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            found.append({"box": [round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)],
                          "label": self._clean(label) or phrases[0], "score": round(score, 4)})
        return nms(sorted(found, key=lambda d: -d["score"]), NMS_IOU)

    def _inputs(self, **kw: Any) -> dict[str, Any]:
        inputs = self.processor(return_tensors="pt", **kw)
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    def _grounding_dino(self, arr: np.ndarray, phrases: list[str], threshold: float,
                        text_threshold: float) -> tuple[dict[str, Any], list[Any]]:
        """Grounding DINO: one text, "a cat. a dog.", each box labelled by its words."""
        import torch

        inputs = self._inputs(images=Image.fromarray(arr), text=". ".join(phrases) + ".")
        with torch.inference_mode():
            outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=threshold, text_threshold=text_threshold,
            target_sizes=[arr.shape[:2]])[0]
        labels = result.get("text_labels")
        if labels is None:  # transformers before 4.51 names the words "labels"
            labels = result.get("labels", [])
        return result, list(labels)

    def _owl(self, arr: np.ndarray, phrases: list[str], threshold: float
             ) -> tuple[dict[str, Any], list[Any]]:
        """OWL-ViT / OWLv2: one query per phrase; a box is labelled by its best query."""
        import torch

        h, w = arr.shape[:2]
        inputs = self._inputs(images=Image.fromarray(arr), text=[phrases], truncation=True)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        # OWLv2 pads the image to a square (bottom and right) before resizing, so its
        # normalised boxes are fractions of that square; OWL-ViT stretches to its size
        side = max(h, w) if self.family == "owlv2" else None
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=threshold, target_sizes=[(side, side) if side else (h, w)],
            text_labels=[phrases])[0]
        return result, list(result["text_labels"])

    def _clean(self, label: Any) -> str:
        """The words of a label, without the tokenizer's special tokens or dots."""
        special = set(getattr(self.processor.tokenizer, "all_special_tokens", ()))
        words = [w for w in str(label).replace(".", " ").split() if w not in special]
        return " ".join(words)

    def annotate(self, image: ImageInput, text: Any = "", threshold: Any = 0.3,
                 detect_resolution: int = 512, image_resolution: int = 512) -> AnnotatorOutput:
        """The image with the boxes drawn and labelled; info has `objects`."""
        objects = self.detect(image, text, threshold)
        return AnnotatorOutput(image=draw_boxes(Image.fromarray(load_image(image)), objects),
                               info={"objects": objects})


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(objects: list[dict[str, Any]], iou: float) -> list[dict[str, Any]]:
    """Greedy non-maximum suppression per label over objects sorted best first: a box that
    overlaps a better one of the same label by more than `iou` is the same object. (A few
    boxes per request: plain Python, no torchvision needed.)"""
    kept: list[dict[str, Any]] = []
    for obj in objects:
        if all(k["label"] != obj["label"] or box_iou(k["box"], obj["box"]) <= iou
               for k in kept):
            kept.append(obj)
    return kept


def draw_boxes(image: Image.Image, objects: list[dict[str, Any]]) -> Image.Image:
    """`image` with each object's box and "label score" drawn (a preview of a detection)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 150))
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        draw.rectangle((x0, y0, x1, y1), outline=(255, 60, 60), width=width)
        draw.text((x0 + 2, y0 + 1), f"{obj['label']} {obj['score']:.2f}", fill=(255, 60, 60))
    return out
