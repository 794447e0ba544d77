"""OpenPose (controlnet_aux): pose maps, OpenPose-JSON keypoints, and `draw_pose` to redraw them.

The round trip the studio relies on: `annotate` detects poses, writes them as OpenPose JSON
(pixel coordinates on the output canvas) and renders the map *from that JSON* with
`draw_pose`. So a user can move a keypoint in the JSON, call `draw_pose`, and get exactly the
map the detector would have drawn for that pose; what ControlNet's openpose model expects.

JSON layout (as OpenPose and the sd-webui ControlNet editor write it)::

    {"canvas_width": W, "canvas_height": H,
     "people": [{"pose_keypoints_2d": [x, y, c] * 18,      # COCO-18 body, c = 0: missing
                 "hand_left_keypoints_2d": [x, y, c] * 21,  # or [] / null when absent
                 "hand_right_keypoints_2d": [x, y, c] * 21,
                 "face_keypoints_2d": [x, y, c] * n}]}     # n <= 71 face points

Coordinates are pixels on the canvas, or normalised to [0, 1] when every coordinate of the JSON
is at most 1 in size (as the A1111 openpose editor decides). `pose_json_in_pixels` gives the
canonical form (pixels, every part a list); `mirror_person` flips one person left to right.

Weights (lllyasviel/Annotators: body_pose_model.pth, hand_pose_model.pth, facenet.pth) are
loaded safely (weights_only / safetensors) into controlnet_aux's own network classes; we bypass
controlnet_aux's `Body/Hand/Face.__init__`, which call plain `torch.load` on the file.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from ._cnaux import cnaux
from .base import (
    MAX_SIDE,
    Annotator,
    AnnotatorOutput,
    ImageInput,
    check_bool,
    check_image_size,
    check_resolution,
    checked_map_size,
    load_image,
)
from .errors import AnnotatorInputError, MissingWeightsError, WeightsFormatError
from .weights import load_state_dict, resolve_weight_file

DEFAULT_OPENPOSE_SOURCE = "lllyasviel/Annotators"
OPENPOSE_FILES = {"body": "body_pose_model.pth", "hand": "hand_pose_model.pth",
                  "face": "facenet.pth"}
BODY_POINTS, HAND_POINTS = 18, 21
MAX_FACE_POINTS = 71  # controlnet_aux keeps only the face heatmaps with a peak: up to 71
MAX_PEOPLE = 100
# COCO-18 (nose, neck, R shoulder/elbow/wrist, L ..., R hip/knee/ankle, L ..., R/L eye, R/L ear):
# the index of each point's left/right twin.
BODY_MIRROR = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)
# The 70 OpenPose face points (iBUG 68 + two pupils): each one's twin across the face.
FACE_MIRROR = (*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
               45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, *range(54, 47, -1),
               *range(59, 54, -1), *range(64, 59, -1), 67, 66, 65, 69, 68)
_PEOPLE_KEYS = {"pose_keypoints_2d": "body", "hand_left_keypoints_2d": "left hand",
                "hand_right_keypoints_2d": "right hand", "face_keypoints_2d": "face"}

# Output heads of each network: their widths are fixed by the keypoint layout and never vary.
_HEADS = {
    "body": re.compile(r"(conv5_5_CPM|Mconv7_stage\d)_L[12]$"),
    "hand": re.compile(r"(conv6_2_CPM|Mconv7_stage\d)$"),
    "face": re.compile(r"(conv6_2_CPM|Mconv7_stage\d)$"),
}
_HAND_EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 5], [5, 6], [6, 7], [7, 8], [0, 9], [9, 10],
               [10, 11], [11, 12], [0, 13], [13, 14], [14, 15], [15, 16], [0, 17], [17, 18],
               [18, 19], [19, 20]]


# --------------------------------------------------------------------------- keypoints <-> JSON


def poses_to_json(
    poses: list[Any], width: int, height: int, *, include_body: bool = True,
    include_hand: bool = True, include_face: bool = True,
) -> dict[str, Any]:
    """controlnet_aux PoseResults (normalised coords) -> OpenPose JSON on a width x height canvas.

    Parts not included are written as empty lists, so the JSON holds exactly what is drawn.
    """

    def flat(points: list[Any] | None, include: bool) -> list[float]:
        if not include or not points:
            return []
        out: list[float] = []
        for p in points:
            if p is None or p.x < 0 or p.y < 0:  # controlnet_aux marks missing with None / -1
                out += [0.0, 0.0, 0.0]
            else:
                out += [round(float(p.x) * width, 2), round(float(p.y) * height, 2), 1.0]
        return out

    return {
        "canvas_width": int(width),
        "canvas_height": int(height),
        "people": [
            {
                "pose_keypoints_2d": flat(pose.body.keypoints, include_body),
                "hand_left_keypoints_2d": flat(pose.left_hand, include_hand),
                "hand_right_keypoints_2d": flat(pose.right_hand, include_hand),
                "face_keypoints_2d": flat(pose.face, include_face),
            }
            for pose in poses
        ],
    }


def _as_dict(keypoints: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(keypoints, (str, bytes)):
        if not keypoints.strip():
            raise AnnotatorInputError("No keypoints given: the pose JSON is empty.")
        try:
            keypoints = json.loads(keypoints)
        except json.JSONDecodeError as err:
            raise AnnotatorInputError(
                f"The pose keypoints are not valid JSON: {err.msg} (line {err.lineno}, "
                f"column {err.colno})."
            ) from err
    if not isinstance(keypoints, dict):
        raise AnnotatorInputError(
            "The pose keypoints must be an OpenPose JSON object with a 'people' list, got "
            f"{type(keypoints).__name__}."
        )
    return keypoints


def _triplets(values: Any, where: str, lo: int, hi: int) -> list[tuple[float, float, float]]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise AnnotatorInputError(f"{where} must be a flat list of numbers [x, y, c, ...].")
    if not values:
        return []
    if len(values) % 3 or not lo <= len(values) // 3 <= hi:
        expected = f"{lo * 3}" if lo == hi else f"up to {hi * 3}"
        raise AnnotatorInputError(
            f"{where} has {len(values)} numbers; expected {expected} (x, y, confidence per "
            "keypoint). ControlNet OpenPose uses the COCO-18 body layout and 21-point hands."
        )
    if not all(math.isfinite(v) for v in values):
        raise AnnotatorInputError(f"{where} contains NaN or infinite numbers.")
    return [tuple(values[i:i + 3]) for i in range(0, len(values), 3)]


def json_to_poses(
    keypoints: str | dict[str, Any], canvas: tuple[int, int] | None = None,
) -> tuple[list[Any], tuple[int, int]]:
    """OpenPose JSON -> (controlnet_aux PoseResults with normalised coords, (canvas w, h)).

    A keypoint with confidence <= 0 is missing. `canvas` is used when the JSON has no
    canvas_width/canvas_height. Coordinates are normalised when all are at most 1 in size.
    """
    op = cnaux("open_pose")
    data = _as_dict(keypoints)
    people = data.get("people")
    if not isinstance(people, list):
        raise AnnotatorInputError("The pose JSON needs a 'people' list (one entry per person).")
    if len(people) > MAX_PEOPLE:
        raise AnnotatorInputError(
            f"The pose JSON has {len(people)} people; at most {MAX_PEOPLE} are drawn. Remove "
            "some (or split the pose into several control units)."
        )
    cw, ch = _canvas(data, canvas)
    parts = [_person_parts(person, i) for i, person in enumerate(people, start=1)]
    sx, sy = (1.0, 1.0) if _normalised(parts) else (cw, ch)
    missing = op.body.Keypoint(x=-1.0, y=-1.0)  # controlnet_aux's "absent" for hands and face

    def points(values: list[tuple[float, float, float]], absent: Any) -> list[Any]:
        return [op.body.Keypoint(x=x / sx, y=y / sy) if c > 0 else absent for x, y, c in values]

    poses = [
        op.PoseResult(
            body=op.body.BodyResult(keypoints=points(body, None) or [None] * BODY_POINTS,
                                    total_score=0.0, total_parts=0),
            left_hand=points(left, missing) or None,
            right_hand=points(right, missing) or None,
            face=points(face, missing) or None,
        )
        for body, left, right, face in parts
    ]
    return poses, (int(cw), int(ch))


def _canvas(data: dict[str, Any], canvas: tuple[int, int] | None) -> tuple[float, float]:
    """The JSON's canvas_width x canvas_height (else `canvas`), checked."""
    cw, ch = data.get("canvas_width"), data.get("canvas_height")
    if cw is None and ch is None and canvas is not None:
        cw, ch = canvas
    for name, v in (("canvas_width", cw), ("canvas_height", ch)):
        if v is None:
            raise AnnotatorInputError(
                "The pose JSON has no canvas_width/canvas_height: give the map size."
            )
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= MAX_SIDE:
            raise AnnotatorInputError(
                f"{name} must be a positive number of pixels up to {MAX_SIDE}, got {v!r}; "
                "set it to the size of the image the pose belongs to."
            )
    return cw, ch


Triplets = list[tuple[float, float, float]]


def _person_parts(person: Any, i: int) -> tuple[Triplets, Triplets, Triplets, Triplets]:
    """(body, left hand, right hand, face) triplets of person `i`, checked."""
    if not isinstance(person, dict):
        raise AnnotatorInputError(f"Person {i} in the pose JSON must be an object.")
    unknown = {k for k in person if k not in _PEOPLE_KEYS and k != "person_id"
               and not k.endswith("_3d")}
    if unknown:
        raise AnnotatorInputError(
            f"Person {i} has unknown keys {sorted(unknown)}; expected "
            f"{', '.join(_PEOPLE_KEYS)}."
        )
    return (
        _triplets(person.get("pose_keypoints_2d"), f"Person {i} body keypoints",
                  BODY_POINTS, BODY_POINTS),
        _triplets(person.get("hand_left_keypoints_2d"), f"Person {i} left hand keypoints",
                  HAND_POINTS, HAND_POINTS),
        _triplets(person.get("hand_right_keypoints_2d"), f"Person {i} right hand keypoints",
                  HAND_POINTS, HAND_POINTS),
        _triplets(person.get("face_keypoints_2d"), f"Person {i} face keypoints",
                  1, MAX_FACE_POINTS),
    )


def _normalised(parts: list[tuple[Triplets, ...]]) -> bool:
    """True when every present point's coordinates are at most 1 in size (the A1111 editor's
    rule for normalised JSON); False for pixels, and when no point is present."""
    coords = [abs(v) for person in parts for part in person for x, y, c in part if c > 0
              for v in (x, y)]
    return bool(coords) and max(coords) <= 1


def pose_json_in_pixels(
    keypoints: str | dict[str, Any], canvas: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Any accepted OpenPose JSON (pixels or normalised) -> the canonical form: pixel
    coordinates (2 decimals), confidence 1 or 0, every part a list ([] when absent)."""
    poses, (width, height) = json_to_poses(keypoints, canvas)
    return poses_to_json(poses, width, height)


def mirror_person(person: dict[str, Any]) -> dict[str, Any]:
    """One person of an OpenPose JSON flipped left to right about the centre of its present
    points: x -> 2 * centre - x, left and right body points, hands and face points swapped."""

    def triplets(key: str) -> list[list[float]]:
        flat = person.get(key) or []
        return [list(flat[i:i + 3]) for i in range(0, len(flat), 3)]

    parts = {key: triplets(key) for key in _PEOPLE_KEYS}
    xs = [p[0] for part in parts.values() for p in part if p[2] > 0]
    centre = (min(xs) + max(xs)) / 2 if xs else 0.0

    def flipped(points: list[list[float]], twins: tuple[int, ...] | None) -> list[float]:
        if twins is not None and len(twins) == len(points):
            points = [points[j] for j in twins]
        return [v for x, y, c in points
                for v in ((round(2 * centre - x, 4), y, c) if c > 0 else (x, y, c))]

    return {
        **person,
        "pose_keypoints_2d": flipped(parts["pose_keypoints_2d"], BODY_MIRROR),
        "hand_left_keypoints_2d": flipped(parts["hand_right_keypoints_2d"], None),
        "hand_right_keypoints_2d": flipped(parts["hand_left_keypoints_2d"], None),
        "face_keypoints_2d": flipped(parts["face_keypoints_2d"], FACE_MIRROR),
    }


# --------------------------------------------------------------------------------- drawing


def _draw_handpose(canvas: np.ndarray, keypoints: list[Any] | None) -> np.ndarray:
    # Port of controlnet_aux.open_pose.util.draw_handpose. The original imports matplotlib (a
    # dependency of neither controlnet_aux nor the studio) only for hsv_to_rgb; colorsys computes
    # the same colours, so the map is pixel-identical (tests compare when matplotlib exists).
    import cv2

    if not keypoints:
        return canvas
    h, w, _ = canvas.shape
    eps = cnaux("open_pose.util").eps
    for ie, (e1, e2) in enumerate(_HAND_EDGES):
        k1, k2 = keypoints[e1], keypoints[e2]
        if k1 is None or k2 is None:
            continue
        x1, y1, x2, y2 = int(k1.x * w), int(k1.y * h), int(k2.x * w), int(k2.y * h)
        if x1 > eps and y1 > eps and x2 > eps and y2 > eps:
            color = [c * 255 for c in colorsys.hsv_to_rgb(ie / float(len(_HAND_EDGES)), 1.0, 1.0)]
            cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=2)
    for k in keypoints:
        x, y = int(k.x * w), int(k.y * h)
        if x > eps and y > eps:
            cv2.circle(canvas, (x, y), 4, (0, 0, 255), thickness=-1)
    return canvas


def render_poses(
    poses: list[Any], width: int, height: int, *, draw_body: bool = True,
    draw_hand: bool = True, draw_face: bool = True,
) -> np.ndarray:
    """controlnet_aux's `draw_poses` (body, then hands, then face per person) on black."""
    util = cnaux("open_pose.util")
    canvas = np.zeros((height, width, 3), np.uint8)
    for pose in poses:
        if draw_body:
            canvas = util.draw_bodypose(canvas, pose.body.keypoints)
        if draw_hand:
            canvas = _draw_handpose(canvas, pose.left_hand)
            canvas = _draw_handpose(canvas, pose.right_hand)
        if draw_face:
            canvas = util.draw_facepose(canvas, pose.face)
    return canvas


def draw_pose(
    keypoints: str | dict[str, Any], size: tuple[int, int] | None = None, *,
    draw_body: bool = True, draw_hand: bool = True, draw_face: bool = True,
) -> Image.Image:
    """Render OpenPose JSON into the RGB map the openpose ControlNet expects.

    `size` is (width, height) of the map; default: the JSON's canvas. Keypoints are pixel
    coordinates on the JSON canvas (the map's own size when the JSON names none) and scale
    with the map.
    """
    size = _check_size(size) if size is not None else None
    poses, canvas = json_to_poses(keypoints, canvas=size)
    width, height = size or _check_size(canvas)
    return Image.fromarray(render_poses(poses, width, height, draw_body=draw_body,
                                        draw_hand=draw_hand, draw_face=draw_face))


def _check_size(size: Any) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
        if any(float(v) != int(v) for v in size):
            raise ValueError
    except (TypeError, ValueError) as err:
        raise AnnotatorInputError(
            f"Map size must be (width, height) in whole pixels, got {size!r}."
        ) from err
    check_image_size(width, height, "pose map")
    return width, height


# ------------------------------------------------------------------------- loading the nets


def build_openpose_net(kind: str, state_dict: dict[str, Any]) -> Any:
    """controlnet_aux's body/hand/face network holding `state_dict`.

    Layer widths are read from the checkpoint: official checkpoints give exactly
    controlnet_aux's networks; the `tiny` set stores the same networks with narrow hidden layers
    (same layers, kernels, strides, stages and output heads), loaded by this same code.
    """
    import torch

    op = cnaux("open_pose")
    template = {"body": op.model.bodypose_model, "hand": op.model.handpose_model,
                "face": op.face.FaceNet}[kind]
    with torch.device("meta"):
        net = template()
    if kind in ("body", "hand"):  # checkpoint keys lack the block prefix (see util.transfer)
        missing = [k for k in net.state_dict() if k.split(".", 1)[1] not in state_dict]
        if missing:
            raise WeightsFormatError(
                f"Not an OpenPose {kind} checkpoint: missing {', '.join(missing[:3])}..."
            )
        state_dict = op.util.transfer(net, state_dict)
    else:
        missing = [k for k in net.state_dict() if k not in state_dict]
        if missing:
            raise WeightsFormatError(
                f"Not an OpenPose face checkpoint: missing {', '.join(missing[:3])}..."
            )
    for name, module in list(net.named_modules()):
        if not isinstance(module, torch.nn.Conv2d):
            continue
        weight = state_dict[f"{name}.weight"]
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        short = name.rsplit(".", 1)[-1]
        if tuple(weight.shape[2:]) != module.kernel_size or (
            _HEADS[kind].search(short) and weight.shape[0] != module.out_channels
        ):
            raise WeightsFormatError(
                f"OpenPose {kind} layer {short} has shape {tuple(weight.shape)}, incompatible "
                f"with {tuple(module.weight.shape)}."
            )
        new = torch.nn.Conv2d(weight.shape[1], weight.shape[0], module.kernel_size,
                              module.stride, module.padding, bias=module.bias is not None,
                              device="meta")
        parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
        setattr(parent, short, new)
    try:
        net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True,
                            assign=True)
    except RuntimeError as err:
        raise WeightsFormatError(f"OpenPose {kind} checkpoint does not fit: {err}") from err
    return net.eval()


def load_openpose_part(
    kind: str, source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> Any:
    """Find, safely load and build one OpenPose network ('body', 'hand' or 'face')."""
    filename = OPENPOSE_FILES[kind]
    if os.path.isfile(os.path.expanduser(os.fspath(source))) and kind != "body":
        raise MissingWeightsError(
            f"The openpose source {os.fspath(source)} is a single file (the body model); "
            f"{kind} detection needs '{filename}' too: point the source at a folder or Hub repo "
            f"holding both (e.g. {DEFAULT_OPENPOSE_SOURCE})."
        )
    stem = filename.rsplit(".", 1)[0]
    path = resolve_weight_file(source, filename, annotator="openpose",
                               alternatives=(f"{stem}.safetensors",), cache_dir=cache_dir,
                               local_files_only=local_files_only)
    return build_openpose_net(kind, load_state_dict(path, annotator="openpose"))


def _wrap(kind: str, net: Any) -> Any:
    # controlnet_aux's Body/Hand/Face run the nets; their __init__ would torch.load the file
    # unsafely, so we create them without it and attach the already-loaded network.
    op = cnaux("open_pose")
    cls = {"body": op.body.Body, "hand": op.hand.Hand, "face": op.face.Face}[kind]
    obj = cls.__new__(cls)
    obj.model = net
    if kind == "face":
        params = op.face.params
        obj.inference_size = params["inference_img_size"]
        obj.sigma = params["gaussian_sigma"]
        obj.threshold = params["heatmap_peak_thresh"]
    return obj


# ------------------------------------------------------------------------------- annotator


class OpenposeAnnotator(Annotator):
    """Human pose (body, optional hands and face) -> pose map + OpenPose JSON keypoints."""

    name = "openpose"
    default_source = DEFAULT_OPENPOSE_SOURCE

    def __init__(
        self, body_net: Any, hand_net: Any = None, face_net: Any = None, *,
        loader: Callable[[str], Any] | None = None,
    ) -> None:
        super().__init__()
        self._nets: dict[str, Any] = {"body": body_net, "hand": hand_net, "face": face_net}
        self._loader = loader  # loads hand/face on first use: most poses need body only
        self._lock = threading.Lock()
        op = cnaux("open_pose")
        self.detector = op.OpenposeDetector(_wrap("body", body_net))

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
    ) -> OpenposeAnnotator:
        """Body weights now; hand and face weights when first asked for."""
        source = path_or_repo or DEFAULT_OPENPOSE_SOURCE

        def loader(kind: str) -> Any:
            return load_openpose_part(kind, source, cache_dir=cache_dir,
                                      local_files_only=local_files_only)

        return cls(loader("body"), loader=loader)

    @property
    def device(self) -> Any:
        return next(self._nets["body"].parameters()).device

    def to(self, device: Any) -> OpenposeAnnotator:
        for net in self._nets.values():
            if net is not None:
                net.to(device)
        return self

    def _ensure(self, kind: str) -> None:
        with self._lock:
            if self._nets[kind] is None:
                if self._loader is None:
                    raise MissingWeightsError(f"No OpenPose {kind} weights were given.")
                self._nets[kind] = self._loader(kind).to(self.device)
            setattr(self.detector, f"{kind}_estimation", _wrap(kind, self._nets[kind]))

    def annotate(
        self,
        image: ImageInput,
        detect_resolution: int = 512,
        image_resolution: int = 512,
        include_body: bool = True,
        include_hand: bool = False,
        include_face: bool = False,
    ) -> AnnotatorOutput:
        """Pose map sized by `image_resolution`; info['keypoints'] is the OpenPose JSON."""
        # 1. check inputs
        arr = load_image(image)
        detect_resolution = check_resolution(detect_resolution, "detect_resolution")
        image_resolution = check_resolution(image_resolution, "image_resolution")
        include_body = check_bool(include_body, "include_body")
        include_hand = check_bool(include_hand, "include_hand")
        include_face = check_bool(include_face, "include_face")
        if not (include_body or include_hand or include_face):
            raise AnnotatorInputError("Choose at least one of body, hands or face to detect.")
        checked_map_size(arr.shape[1], arr.shape[0], detect_resolution)
        out_w, out_h = checked_map_size(arr.shape[1], arr.shape[0], image_resolution)
        for kind, wanted in (("hand", include_hand), ("face", include_face)):
            if wanted:
                self._ensure(kind)

        # 2. detect at detect_resolution (normalised keypoints)
        small = cnaux("util").resize_image(arr, detect_resolution)
        poses = self.detector.detect_poses(small, include_hand=include_hand,
                                           include_face=include_face)

        # 3. keypoints as OpenPose JSON on the output canvas, and the map drawn from that JSON
        keypoints = poses_to_json(poses, out_w, out_h, include_body=include_body,
                                  include_hand=include_hand, include_face=include_face)
        pose_map = draw_pose(keypoints, (out_w, out_h))
        return AnnotatorOutput(pose_map, {"size": [out_w, out_h], "keypoints": keypoints,
                                          "people": len(poses)})
