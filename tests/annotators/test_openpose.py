"""OpenPose: draw_pose renders given keypoints in OpenPose colours, JSON round-trips, weights
load safely into controlnet_aux's networks, and detection -> JSON -> map is consistent."""

from __future__ import annotations

import colorsys
import copy
import importlib.util
import json

import numpy as np
import pytest

from annotators import AnnotatorInputError, draw_pose, get_annotator
from annotators.openpose import build_openpose_net, json_to_poses, poses_to_json


def _body(points: dict[int, tuple[float, float]]) -> list[float]:
    flat: list[float] = []
    for i in range(18):
        flat += [*points[i], 1.0] if i in points else [0.0, 0.0, 0.0]
    return flat


NECK, R_SHOULDER, R_ELBOW, L_SHOULDER = 1, 2, 3, 5
POSE = {
    "canvas_width": 512,
    "canvas_height": 384,
    "people": [{
        "pose_keypoints_2d": _body({NECK: (256, 150), R_SHOULDER: (196, 150),
                                    R_ELBOW: (176, 250), L_SHOULDER: (316, 150)}),
        "hand_left_keypoints_2d": [],
        "hand_right_keypoints_2d": [],
        "face_keypoints_2d": [300.5, 60.25, 1.0, 310.0, 62.0, 1.0, 0.0, 0.0, 0.0],
    }],
}


def test_draw_pose_puts_limbs_at_keypoints_in_openpose_colours():
    img = draw_pose(POSE, (512, 384))
    arr = np.asarray(img)
    assert img.size == (512, 384) and img.mode == "RGB"
    # keypoint dots: OpenPose's per-joint colours (neck orange-red, shoulder orange)
    assert tuple(arr[150, 256]) == (255, 85, 0)
    assert tuple(arr[150, 196]) == (255, 170, 0)
    # limbs: 60% of the limb colour, along the segment between the two keypoints
    assert tuple(arr[150, 226]) == (153, 0, 0)  # neck -> right shoulder
    assert tuple(arr[150, 286]) == (153, 51, 0)  # neck -> left shoulder
    assert tuple(arr[200, 186]) == (153, 102, 0)  # right shoulder -> right elbow
    # face points are white dots; nothing anywhere else
    assert tuple(arr[60, 300]) == (255, 255, 255)
    assert arr[300:, 300:].max() == 0 and arr[:40].max() == 0


def test_edited_keypoint_moves_the_limb():
    edited = copy.deepcopy(POSE)
    edited["people"][0]["pose_keypoints_2d"][3 * R_ELBOW:3 * R_ELBOW + 2] = [120, 150]
    arr = np.asarray(draw_pose(json.dumps(edited), (512, 384)))
    assert arr[200, 186].max() == 0  # old forearm gone
    assert tuple(arr[150, 158]) == (153, 102, 0)  # new one, horizontal


def test_draw_pose_scales_with_the_map_size():
    small = np.asarray(draw_pose(POSE, (256, 192)))
    assert small.shape == (192, 256, 3)
    assert tuple(small[75, 128]) == (255, 85, 0)  # neck at half the coordinates


def test_json_round_trips():
    poses, canvas = json_to_poses(json.dumps(POSE))
    assert canvas == (512, 384)
    assert poses_to_json(poses, *canvas) == POSE
    assert poses[0].body.keypoints[0] is None  # confidence 0 = missing
    assert poses[0].body.keypoints[NECK].x == pytest.approx(0.5)


def test_matches_controlnet_aux_draw_poses():
    from controlnet_aux.open_pose import draw_poses

    poses, _ = json_to_poses(POSE)
    ours = np.asarray(draw_pose(POSE, (512, 384)))
    theirs = draw_poses(poses, 384, 512, draw_body=True, draw_hand=False, draw_face=True)
    assert np.array_equal(ours, theirs)


HAND = [v for i in range(21) for v in (20 + 11 * i, 40 + 50 * (i % 4), 1.0)]


def test_hand_drawing_colours():
    pose = {"canvas_width": 256, "canvas_height": 256,
            "people": [{"pose_keypoints_2d": [], "hand_left_keypoints_2d": HAND}]}
    arr = np.asarray(draw_pose(pose))
    assert tuple(arr[40, 20]) == (0, 0, 255)  # keypoint dot
    hue0 = tuple(round(c * 255) for c in colorsys.hsv_to_rgb(0.0, 1.0, 1.0))
    assert hue0 == (255, 0, 0)
    assert tuple(arr[65, 25]) == hue0  # first bone, keypoint 0 -> 1, red


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="controlnet_aux's draw_handpose needs matplotlib")
def test_hand_drawing_matches_controlnet_aux():  # pragma: no cover - env without matplotlib
    from controlnet_aux.open_pose import draw_poses

    pose = {"canvas_width": 256, "canvas_height": 256,
            "people": [{"pose_keypoints_2d": [], "hand_right_keypoints_2d": HAND}]}
    poses, _ = json_to_poses(pose)
    assert np.array_equal(np.asarray(draw_pose(pose)), draw_poses(poses, 256, 256))


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    ("", "empty"),
    ([1, 2], "OpenPose JSON object"),
    ({"canvas_width": 64, "canvas_height": 64}, "'people' list"),
    ({"people": [{"pose_keypoints_2d": [1.0] * 75}], "canvas_width": 64, "canvas_height": 64},
     "has 75 numbers; expected 54"),
    ({"people": [{"pose_keypoints_2d": ["a"] * 54}], "canvas_width": 64, "canvas_height": 64},
     "flat list of numbers"),
    ({"people": [{"pose_keypoints_2d": [float("nan")] * 54}], "canvas_width": 64,
      "canvas_height": 64}, "NaN"),
    ({"people": [], "canvas_width": -3, "canvas_height": 64}, "canvas_width must be a positive"),
    ({"people": [{"legs": []}], "canvas_width": 64, "canvas_height": 64}, "unknown keys"),
    ({"people": []}, "no canvas_width"),
])
def test_bad_keypoints_get_clear_errors(bad, message):
    with pytest.raises(AnnotatorInputError, match=message):
        draw_pose(bad)


def test_bad_map_size():
    with pytest.raises(AnnotatorInputError, match="too small"):
        draw_pose(POSE, (1, 1))
    with pytest.raises(AnnotatorInputError, match="whole pixels"):
        draw_pose(POSE, (512.5, 10))


@pytest.mark.parametrize("kind", ["body", "hand", "face"])
def test_official_checkpoint_layout_builds_controlnet_aux_networks(kind):
    # The real checkpoints hold the full-width tensors under prefix-less keys; with that
    # layout the loader must build exactly controlnet_aux's network (meta tensors: no memory).
    import torch
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    cls = {"body": bodypose_model, "hand": handpose_model, "face": FaceNet}[kind]
    with torch.device("meta"):
        ref = cls()
    state = {(k if kind == "face" else k.split(".", 1)[1]): v for k, v in ref.state_dict().items()}
    net = build_openpose_net(kind, state)
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_tiny_openpose_annotator(tiny_sources, photo, monkeypatch):
    from controlnet_aux.open_pose import PoseResult
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    pose = get_annotator("openpose", tiny_sources["openpose"], offline=True)
    out = pose.annotate(photo, detect_resolution=256, image_resolution=256)
    assert out.image.size == (448, 256)
    assert out.info["keypoints"] == {"canvas_width": 448, "canvas_height": 256, "people": []}
    assert np.asarray(out.image).max() == 0  # tiny random weights see nobody

    # A detection (stubbed: random weights find none) flows into JSON and the map
    kps = [None] * 18
    kps[NECK], kps[R_SHOULDER] = Keypoint(0.5, 0.25), Keypoint(0.375, 0.25)
    found = [PoseResult(BodyResult(kps, 1.0, 2), None, None, None)]
    monkeypatch.setattr(pose.detector, "detect_poses", lambda *a, **k: found)
    out = pose.annotate(photo, detect_resolution=256, image_resolution=512)
    assert out.image.size == (896, 512) and out.info["people"] == 1
    body = out.info["keypoints"]["people"][0]["pose_keypoints_2d"]
    assert body[3 * NECK:3 * NECK + 3] == [448.0, 128.0, 1.0]
    assert body[3 * R_SHOULDER:3 * R_SHOULDER + 3] == [336.0, 128.0, 1.0]
    redrawn = draw_pose(out.info["keypoints"], out.image.size)
    assert np.array_equal(np.asarray(redrawn), np.asarray(out.image))
    assert tuple(np.asarray(out.image)[128, 448]) == (255, 85, 0)


def test_hand_and_face_weights_load_on_first_use(tiny_sources, photo):
    pose = get_annotator("openpose", tiny_sources["openpose"], offline=True)
    assert pose._nets["hand"] is None and pose._nets["face"] is None
    out = pose.annotate(photo, 256, 256, include_hand=True, include_face=True)
    assert pose._nets["hand"] is not None and pose._nets["face"] is not None
    assert out.info["keypoints"]["people"] == []
    with pytest.raises(AnnotatorInputError, match="at least one"):
        pose.annotate(photo, include_body=False)
    with pytest.raises(AnnotatorInputError, match="include_hand must be true or false"):
        pose.annotate(photo, include_hand="false")
