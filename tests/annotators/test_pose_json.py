"""OpenPose JSON as the A1111 openpose editor exchanges it: pixel or normalised coordinates,
18 body points, 21 per hand, 70 face points; the canonical pixel form the pose editor keeps,
mirroring a person, and clear errors for what cannot be drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotators import AnnotatorInputError, draw_pose
from annotators.openpose import MAX_PEOPLE, mirror_person, pose_json_in_pixels

R_WRIST, L_WRIST, R_EYE, L_EYE = 4, 7, 14, 15
W, H = 200, 100
# A person in COCO-18 order on a 200 x 100 canvas, pixel coordinates (nose .. left ear).
BODY_PX = [(100, 20), (100, 30), (90, 30), (84, 44), (80, 58), (110, 30), (116, 44), (120, 58),
           (94, 60), (93, 76), (92, 92), (106, 60), (107, 76), (108, 92), (98, 18), (102, 18),
           (96, 19), (104, 19)]


def _flat(points: list[tuple[float, float]], absent: set[int] = frozenset()) -> list[float]:
    return [v for i, (x, y) in enumerate(points)
            for v in ((0.0, 0.0, 0.0) if i in absent else (float(x), float(y), 1.0))]


def _person(scale_x: float = 1.0, scale_y: float = 1.0) -> dict:
    hand_l = [(120 + i % 4, 60 + i // 4) for i in range(21)]
    hand_r = [(80 - i % 4, 60 + i // 4) for i in range(21)]
    face = [(96 + (i % 10) * 0.8, 16 + (i // 10) * 0.9) for i in range(70)]

    def scaled(points):
        return [(x * scale_x, y * scale_y) for x, y in points]

    return {"pose_keypoints_2d": _flat(scaled(BODY_PX), absent={16}),
            "hand_left_keypoints_2d": _flat(scaled(hand_l)),
            "hand_right_keypoints_2d": _flat(scaled(hand_r)),
            "face_keypoints_2d": _flat(scaled(face))}


PIXELS = {"canvas_width": W, "canvas_height": H, "people": [_person()]}
NORMALISED = {"canvas_width": W, "canvas_height": H, "people": [_person(1 / W, 1 / H)]}


def test_normalised_coordinates_draw_the_same_map_as_pixels():
    pixels = np.asarray(draw_pose(PIXELS))
    assert pixels.shape == (H, W, 3) and pixels.max() > 0
    assert np.array_equal(np.asarray(draw_pose(json.dumps(NORMALISED))), pixels)


def test_normalised_json_reads_as_pixels_and_round_trips():
    canonical = pose_json_in_pixels(NORMALISED)
    body = canonical["people"][0]["pose_keypoints_2d"]
    assert body[3 * R_WRIST:3 * R_WRIST + 3] == pytest.approx([80.0, 58.0, 1.0])
    assert body[3 * 16:3 * 16 + 3] == [0.0, 0.0, 0.0]  # confidence 0 stays absent
    assert pose_json_in_pixels(PIXELS) == canonical  # same pose, whichever unit it came in
    assert pose_json_in_pixels(canonical) == canonical  # the canonical form is a fixed point
    person = canonical["people"][0]
    assert [len(person[k]) for k in ("hand_left_keypoints_2d", "hand_right_keypoints_2d",
                                     "face_keypoints_2d")] == [63, 63, 210]


def test_parts_left_out_are_empty_lists_and_pixels_stay_pixels():
    pose = {"canvas_width": 64, "canvas_height": 64,
            "people": [{"pose_keypoints_2d": _flat([(1.5, 1.0)] * 18)}]}  # one value > 1
    person = pose_json_in_pixels(pose)["people"][0]
    assert person["pose_keypoints_2d"][:3] == [1.5, 1.0, 1.0]
    assert person["hand_left_keypoints_2d"] == person["face_keypoints_2d"] == []


def test_mirror_swaps_left_and_right_about_the_persons_centre():
    person = PIXELS["people"][0]
    mirrored = mirror_person(person)  # its points span x 77 .. 123 (the hands): centre 100
    body = mirrored["pose_keypoints_2d"]
    # the new right wrist is the old left wrist, flipped about x = 100
    assert body[3 * R_WRIST:3 * R_WRIST + 3] == [2 * 100 - 120, 58, 1.0]
    assert body[3 * L_WRIST:3 * L_WRIST + 3] == [2 * 100 - 80, 58, 1.0]
    assert body[3 * R_EYE:3 * R_EYE + 2] == [2 * 100 - 102, 18]
    assert body[3 * 17:3 * 17 + 3] == [0.0, 0.0, 0.0]  # the absent right ear is the left ear now
    assert mirrored["hand_left_keypoints_2d"][:2] == [2 * 100 - 80, 60]  # the old right hand
    # face: the first jaw point changes places with the last one
    old_face = person["face_keypoints_2d"]
    assert mirrored["face_keypoints_2d"][:2] == pytest.approx([200 - old_face[48],
                                                               old_face[49]])
    twice = mirror_person(mirrored)
    assert all(twice[k] == pytest.approx(v) for k, v in person.items())
    # the map of a mirrored symmetric person is the flipped map with its colours swapped
    drawn = np.asarray(draw_pose({**PIXELS, "people": [mirrored]}))
    assert drawn.max() > 0 and not np.array_equal(drawn, np.asarray(draw_pose(PIXELS)))


@pytest.mark.parametrize("bad, message", [
    ({"people": [{"pose_keypoints_2d": [1.0] * 53}]}, "has 53 numbers; expected 54"),
    ({"people": [{"pose_keypoints_2d": [1.0] * 51}]}, "has 51 numbers; expected 54"),
    ({"people": [{"hand_left_keypoints_2d": [1.0] * 60}]}, "left hand keypoints has 60"),
    ({"people": [{"face_keypoints_2d": [1.0] * 214}]}, "up to 213"),
    ({"people": [{"pose_keypoints_2d": [float("inf")] * 54}]}, "NaN or infinite"),
    ({"people": [], "canvas_width": -512}, "canvas_width must be a positive number"),
    ({"people": [], "canvas_height": 100_000}, "up to 8192"),
    ({"people": [{}] * (MAX_PEOPLE + 1)}, f"at most {MAX_PEOPLE} are drawn"),
])
def test_bad_pose_json_says_what_is_wrong(bad, message):
    pose = {"canvas_width": 64, "canvas_height": 64, **bad}
    with pytest.raises(AnnotatorInputError, match=message):
        pose_json_in_pixels(pose)
    assert pose_json_in_pixels(PIXELS)["canvas_width"] == W  # and the next one works
