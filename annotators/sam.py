"""SAM (segment_anything's SamPredictor): click or box -> mask in the image's own pixels.

The image embedding (the expensive ViT pass) is computed once per image and kept in a small
LRU cache keyed by a hash of the pixels, so every further click on the same image only runs
the light prompt encoder and mask decoder. Points and boxes are given in the original image's
pixel coordinates and masks come back at the original size, for any aspect ratio: the
predictor's ResizeLongestSide transform maps prompts into its padded 1024 px frame and
`postprocess_masks` maps masks back, provided it is told the true original size, which is
exactly what we store and restore with each cached embedding.

Loading: segment_anything's builder calls plain `torch.load` on the checkpoint; we never use
it with a file. We read the checkpoint safely, infer the architecture from its tensor shapes
(ViT-B/L/H, or the `tiny` set's miniature) and build `Sam(ImageEncoderViT, PromptEncoder,
MaskDecoder)` from segment_anything's own modules, as its `_build_sam` does.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from .base import Annotator, AnnotatorOutput, ImageInput, check_bool, load_image
from .errors import AnnotatorInputError, WeightsFormatError
from .weights import load_state_dict, resolve_weight_file

DEFAULT_SAM_SOURCE = "ybelkada/segment-anything"
DEFAULT_SAM_FILE = "checkpoints/sam_vit_b_01ec64.pth"
MAX_CLICKS = 64  # per prediction: the decoder's memory grows with the square of their count
SAM_FILE_NAMES = ("sam_vit_b_01ec64.pth", "sam_vit_b_01ec64.safetensors", "sam.safetensors",
                  "sam.pth")


@dataclass(frozen=True)
class SamConfig:
    """Everything `segment_anything.build_sam._build_sam` hard-codes or takes, as fields."""

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_mlp_ratio: float = 4.0
    window_size: int = 14
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8  # not visible in weights; 8 in every SAM release
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any]) -> SamConfig:
        """Read the architecture off a SAM checkpoint's tensor shapes."""
        try:
            patch = sd["image_encoder.patch_embed.proj.weight"]
            embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
            grid = int(sd["image_encoder.pos_embed"].shape[1])
            depth = 1 + max(int(k.split(".")[2]) for k in sd
                            if k.startswith("image_encoder.blocks."))
            head_dim = int(sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
            rel = [int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0])
                   for i in range(depth)]
            global_idx = tuple(i for i, r in enumerate(rel) if r == 2 * grid - 1)
            windowed = [r for r in rel if r != 2 * grid - 1]
            mlp_hidden = int(sd["image_encoder.blocks.0.mlp.lin1.weight"].shape[0])
            prompt_dim = int(sd["image_encoder.neck.0.weight"].shape[0])
            dec_layers = {k.split(".")[3] for k in sd
                          if k.startswith("mask_decoder.transformer.layers.")}
            iou_layers = {k.split(".")[3] for k in sd
                          if k.startswith("mask_decoder.iou_prediction_head.layers.")}
            return cls(
                encoder_embed_dim=embed_dim,
                encoder_depth=depth,
                encoder_num_heads=embed_dim // head_dim,
                encoder_global_attn_indexes=global_idx,
                encoder_mlp_ratio=mlp_hidden / embed_dim,
                window_size=(windowed[0] + 1) // 2 if windowed else 0,
                image_size=grid * patch_size,
                patch_size=patch_size,
                prompt_embed_dim=prompt_dim,
                mask_in_chans=int(sd["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
                decoder_depth=len(dec_layers),
                decoder_mlp_dim=int(
                    sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
                num_multimask_outputs=int(sd["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
                iou_head_depth=len(iou_layers),
                iou_head_hidden_dim=int(
                    sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
            )
        except (KeyError, IndexError, ValueError) as err:
            raise WeightsFormatError(
                f"Not a segment_anything SAM checkpoint (cannot read {err} from it)."
            ) from err


def build_sam(config: SamConfig, device: Any = None) -> Any:
    """An (untrained) segment_anything `Sam` of this architecture, like `_build_sam` builds."""
    from functools import partial

    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    emb = config.image_size // config.patch_size
    with torch.device(device or "cpu"):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=config.encoder_depth, embed_dim=config.encoder_embed_dim,
                img_size=config.image_size, mlp_ratio=config.encoder_mlp_ratio,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=config.encoder_num_heads, patch_size=config.patch_size,
                qkv_bias=True, use_rel_pos=True,
                global_attn_indexes=config.encoder_global_attn_indexes,
                window_size=config.window_size, out_chans=config.prompt_embed_dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=config.prompt_embed_dim, image_embedding_size=(emb, emb),
                input_image_size=(config.image_size, config.image_size),
                mask_in_chans=config.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=config.num_multimask_outputs,
                transformer=TwoWayTransformer(
                    depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
                    mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads,
                ),
                transformer_dim=config.prompt_embed_dim,
                iou_head_depth=config.iou_head_depth,
                iou_head_hidden_dim=config.iou_head_hidden_dim,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    return sam.eval()


def load_sam(path: str | os.PathLike) -> Any:
    """Safely load a SAM checkpoint file (.pth via weights_only, or .safetensors)."""
    sd = load_state_dict(path, annotator="sam")
    config = SamConfig.from_state_dict(sd)
    sam = build_sam(config, device="meta")  # no random init: the checkpoint fills everything
    try:
        sam.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise WeightsFormatError(f"{path} does not fit SAM {config}: {err}") from err
    import torch

    # pixel_mean/pixel_std are non-persistent buffers (not in checkpoints): recreate them
    sam.pixel_mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    sam.pixel_std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    return sam.eval()


# ------------------------------------------------------------------------------ prompts


def _json_or_value(value: Any, what: str) -> Any:
    if isinstance(value, (str, bytes)):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise AnnotatorInputError(
                f"The {what} are not valid JSON: {err.msg} (line {err.lineno}, column "
                f"{err.colno})."
            ) from err
    return value


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise AnnotatorInputError(f"{what} must be a number, got {v!r}.")
    if not math.isfinite(float(v)):
        raise AnnotatorInputError(f"{what} must be a finite number, got {v!r}.")
    return float(v)


def parse_prompts(
    points: Any, box: Any, width: int, height: int,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate clicks and a box given in image pixels; return SamPredictor's arrays.

    `points`: [[x, y, label], ...] (label 1 = include, 0 = exclude) or its JSON string.
    `box`: [x0, y0, x1, y1] or its JSON string; empty/None for no box. Returns
    (point_coords Nx2 float32 | None, point_labels N int | None, box 4 float32 | None).
    """
    points = _json_or_value(points, "clicks")
    box = _json_or_value(box, "box")
    coords = labels = box_arr = None
    if points is not None and (not isinstance(points, (list, tuple))):
        raise AnnotatorInputError("Clicks must be a list of [x, y, label] items.")
    if points is not None and len(points) > MAX_CLICKS:
        raise AnnotatorInputError(
            f"{len(points)} clicks; at most {MAX_CLICKS} are taken (SAM finds an object from a "
            "few clicks: add a box instead of more).")
    if points:
        xy, lab = [], []
        for i, p in enumerate(points, start=1):
            if not isinstance(p, (list, tuple)) or len(p) != 3:
                raise AnnotatorInputError(
                    f"Click {i} must be [x, y, label] (label 1 = include, 0 = exclude), "
                    f"got {p!r}."
                )
            x, y = _number(p[0], f"Click {i} x"), _number(p[1], f"Click {i} y")
            label = p[2]
            if isinstance(label, bool) or label not in (0, 1):
                raise AnnotatorInputError(
                    f"Click {i} has label {label!r}; use 1 to include, 0 to exclude."
                )
            if not (0 <= x <= width and 0 <= y <= height):
                raise AnnotatorInputError(
                    f"Click {i} at ({x:g}, {y:g}) is outside the {width}x{height} px image."
                )
            xy.append((x, y))
            lab.append(int(label))
        coords, labels = np.array(xy, np.float32), np.array(lab, np.int64)
    if box is not None and not (isinstance(box, (list, tuple)) and len(box) == 0):
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise AnnotatorInputError(f"The box must be [x0, y0, x1, y1], got {box!r}.")
        x0, y0, x1, y1 = (_number(v, "Box coordinate") for v in box)
        if x1 <= x0 or y1 <= y0:
            raise AnnotatorInputError(
                f"The box has x1 <= x0 or y1 <= y0 ({x0:g}, {y0:g}, {x1:g}, {y1:g}); give the "
                "top-left corner first, then the bottom-right one."
            )
        if min(x0, y0) < 0 or x1 > width or y1 > height:
            raise AnnotatorInputError(
                f"The box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) goes outside the {width}x{height} px "
                "image."
            )
        box_arr = np.array([x0, y0, x1, y1], np.float32)
    if coords is None and box_arr is None:
        raise AnnotatorInputError("Click on the image or draw a box to select something.")
    if box_arr is None and not labels.any():
        raise AnnotatorInputError(
            "All clicks exclude (label 0): add at least one include click (label 1) or a box."
        )
    return coords, labels, box_arr


# ------------------------------------------------------------------------------ annotator


@dataclass
class SamPrediction:
    """Masks at the original image size; `mask` is the best of `masks` (highest score)."""

    mask: np.ndarray  # HxW bool
    masks: np.ndarray  # KxHxW bool, the candidates
    scores: list[float]  # predicted IoU of each candidate
    best: int
    cached_embedding: bool  # True when this image's embedding came from the cache
    info: dict[str, Any] = field(default_factory=dict)


class SamAnnotator(Annotator):
    """Interactive segmentation with one embedding per image (LRU cached)."""

    name = "sam"
    default_source = DEFAULT_SAM_SOURCE

    def __init__(self, model: Any, cache_size: int = 4) -> None:
        from segment_anything import SamPredictor

        super().__init__()
        if cache_size < 1:
            raise AnnotatorInputError("The SAM embedding cache must hold at least one image.")
        self.model = model.eval()
        self.predictor = SamPredictor(self.model)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[Any, tuple[int, int], tuple[int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self.embedding_computations = 0

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike | None = None,
        *,
        filename: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        cache_size: int = 4,
    ) -> SamAnnotator:
        """A SAM checkpoint from a file, a folder holding one, or a Hub repo (+ filename)."""
        source = path_or_repo or DEFAULT_SAM_SOURCE
        path = resolve_weight_file(source, filename or DEFAULT_SAM_FILE, annotator="sam",
                                   alternatives=() if filename else SAM_FILE_NAMES,
                                   cache_dir=cache_dir, local_files_only=local_files_only)
        return cls(load_sam(path), cache_size=cache_size)

    @property
    def device(self) -> Any:
        return self.model.device

    def to(self, device: Any) -> SamAnnotator:
        with self._lock:
            self.model.to(device)
            self._cache.clear()
            self.predictor.reset_image()
        return self

    @staticmethod
    def image_key(arr: np.ndarray) -> str:
        """Content hash of an image array (shape included)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).data)
        return h.hexdigest()

    def _set_image(self, arr: np.ndarray) -> bool:
        """Make `arr` the predictor's image; True when the embedding came from the cache."""
        key = self.image_key(arr)
        p = self.predictor
        if key in self._cache:
            self._cache.move_to_end(key)
            features, original_size, input_size = self._cache[key]
            p.reset_image()
            p.features, p.original_size, p.input_size = features, original_size, input_size
            p.is_image_set = True
            return True
        p.set_image(arr, image_format="RGB")
        self.embedding_computations += 1
        self._cache[key] = (p.features, p.original_size, p.input_size)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return False

    def predict(
        self, image: ImageInput, points: Any = None, box: Any = None,
        multimask: bool | None = None,
    ) -> SamPrediction:
        """Best mask plus candidates for clicks [[x, y, label], ...] and/or a box [x0,y0,x1,y1].

        `multimask`: ask SAM for 3 candidates (default: yes for a single click, where the
        target is ambiguous; one mask for several clicks or a box, as SAM's authors advise).
        """
        arr = load_image(image)
        height, width = arr.shape[:2]
        coords, labels, box_arr = parse_prompts(points, box, width, height)
        if multimask is None:
            multimask = box_arr is None and coords is not None and len(coords) == 1
        multimask = check_bool(multimask, "multimask")
        with self._lock:
            cached = self._set_image(arr)
            masks, scores, _ = self.predictor.predict(
                point_coords=coords, point_labels=labels, box=box_arr,
                multimask_output=bool(multimask),
            )
        best = int(np.argmax(scores))
        return SamPrediction(mask=masks[best], masks=masks, scores=[float(s) for s in scores],
                             best=best, cached_embedding=cached)

    def annotate(
        self, image: ImageInput, detect_resolution: int | None = None,
        image_resolution: int | None = None, points: Any = None, box: Any = None,
        multimask: bool | None = None,
    ) -> AnnotatorOutput:
        """L-mode mask (255 = selected) at the image's own size.

        SAM always works in its own 1024 px frame, so the resolutions are accepted for the
        common interface and ignored: the mask must line up with the original pixels.
        """
        pred = self.predict(image, points=points, box=box, multimask=multimask)
        mask = Image.fromarray(pred.mask.astype(np.uint8) * 255)
        info = {"size": list(mask.size), "score": pred.scores[pred.best],
                "candidates": pred.scores, "cached_embedding": pred.cached_embedding,
                "embedding_computations": self.embedding_computations}
        return AnnotatorOutput(mask, info)

