"""Depth (MiDaS DPT-Hybrid through transformers' DPTForDepthEstimation): near is bright.

Why transformers and not controlnet_aux's MidasDetector: `Intel/dpt-hybrid-midas` holds the same
MiDaS v3 DPT-Hybrid weights ControlNet's depth model was trained with (lllyasviel/Annotators'
`dpt_hybrid-midas-501f0c75.pt`), but loads through `from_pretrained` (safetensors, or
weights_only .bin), needs no timm, and has a config, so the `tiny` set can save a miniature DPT
in the same layout and load it with this same code. MidasDetector would unpickle a .pt with a
hard-wired 120M-parameter architecture.

MiDaS predicts relative inverse depth (disparity): larger means nearer. We min-max normalise it
to 0-255, so near is bright and far is dark, as the depth ControlNet expects.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from .base import (
    Annotator,
    AnnotatorOutput,
    ImageInput,
    check_resolution,
    checked_map_size,
    load_image,
)
from .errors import MissingWeightsError, WeightsFormatError
from .weights import transformers_config

DEFAULT_DEPTH_SOURCE = "Intel/dpt-hybrid-midas"


def disparity_to_image(disparity: np.ndarray) -> np.ndarray:
    """HxW relative inverse depth -> HxWx3 uint8, min-max normalised (near = 255, far = 0).

    A constant prediction (nothing to tell apart) becomes all black rather than NaN.
    """
    d = disparity.astype(np.float64)
    lo, hi = float(d.min()), float(d.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros((*d.shape, 3), np.uint8)
    gray = ((d - lo) / (hi - lo) * 255.0).round().clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


class DepthAnnotator(Annotator):
    """Monocular depth map for the depth ControlNet."""

    name = "depth"
    default_source = DEFAULT_DEPTH_SOURCE

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
    ) -> DepthAnnotator:
        """Load a DPT depth model (+ its image processor) from a folder or a Hub repo."""
        from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

        source = os.fspath(path_or_repo or DEFAULT_DEPTH_SOURCE)
        kw: dict[str, Any] = {"cache_dir": os.fspath(cache_dir) if cache_dir else None,
                              "local_files_only": local_files_only}
        config = transformers_config(source, kw, role="depth", example=DEFAULT_DEPTH_SOURCE,
                                     needs="The depth annotator needs the DPT model",
                                     files="config.json and model.safetensors")
        if not isinstance(config, DPTConfig):
            raise WeightsFormatError(
                f"'{source}' is a {type(config).__name__.removesuffix('Config')} model, not a DPT "
                f"depth model (e.g. {DEFAULT_DEPTH_SOURCE})."
            )
        try:
            # transformers loads safetensors, or .bin with torch.load(weights_only=True)
            model = DPTForDepthEstimation.from_pretrained(source, config=config, **kw)
        except OSError as err:
            raise MissingWeightsError(
                f"The DPT weights of '{source}' are missing or unreadable ({err})."
            ) from err
        try:
            processor = DPTImageProcessor.from_pretrained(source, **kw)
        except OSError:  # no preprocessor_config.json: MiDaS DPT defaults
            size = config.image_size
            processor = DPTImageProcessor(size={"height": size, "width": size},
                                          image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return cls(model, processor)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def to(self, device: Any) -> DepthAnnotator:
        self.model.to(device)
        return self

    def annotate(
        self, image: ImageInput, detect_resolution: int = 512, image_resolution: int = 512,
    ) -> AnnotatorOutput:
        """Depth map sized by `image_resolution` (short side, multiples of 64).

        The model sees the image at the size its own image processor specifies (DPT-Hybrid:
        384x384, which transformers' ViT-based DPT requires; also what the depth-estimation
        pipeline does). `detect_resolution` is checked for the common interface only.
        """
        import torch

        # 1. check inputs
        arr = load_image(image)
        check_resolution(detect_resolution, "detect_resolution")
        image_resolution = check_resolution(image_resolution, "image_resolution")
        out_w, out_h = checked_map_size(arr.shape[1], arr.shape[0], image_resolution)

        # 2. preprocess with the model's own image processor
        inputs = self.processor(images=arr, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)

        # 3. predict and resize the prediction (not the 8-bit image) to the output size
        with torch.no_grad():
            disparity = self.model(pixel_values=pixel_values).predicted_depth
            disparity = torch.nn.functional.interpolate(
                disparity[:, None].float(), size=(out_h, out_w), mode="bicubic",
                align_corners=False,
            )[0, 0]

        # 4. normalise: near bright, far dark
        depth = disparity_to_image(disparity.cpu().numpy())
        return AnnotatorOutput(Image.fromarray(depth), {"size": [out_w, out_h]})
