"""What the toy world's models draw, judged by the classical analyser (toyworld.analyse).

Each test runs one check of `toyworld.evaluate` through the studio's real backend (the same
pipelines, registry and request validation the UI and API use) on new scenes, and asserts the
thresholds of the toy-world issue. The numbers land in test-report/toy-semantics.json. The
checks that judge one image per case run the first 24 of `toyworld.evaluate`'s 48 cases here
(CI's time budget); the README quotes the full 48 (`python -m toyworld.evaluate`).
"""

from __future__ import annotations

import numpy as np
import pytest

from toyworld import evaluate
from toyworld.analyse import analyse

pytestmark = pytest.mark.slow
CI_CASES = 24  # of the 48 the README's numbers come from


def test_prompted_colour_and_shape(toy_studio, report):
    ev = evaluate.eval_txt2img(toy_studio, n=CI_CASES)
    report(ev)
    assert ev.metrics["colour right"] >= 0.90
    assert ev.metrics["shape right"] >= 0.75


def test_sketch_and_edge_maps_are_followed(toy_studio, report):
    ev = evaluate.eval_control(toy_studio, n=CI_CASES)
    report(ev)
    assert ev.metrics["IoU >= 0.6"] >= 0.75


def test_boxes_receive_their_objects(toy_studio, report):
    ev = evaluate.eval_layout(toy_studio, n=CI_CASES)
    report(ev)
    assert ev.metrics["object in its box"] >= 0.80
    assert ev.metrics["right colour in its box"] >= 0.80
    # the boxes do the work: without them the same prompts land far less often
    assert ev.metrics["without boxes (chance)"] < ev.metrics["right colour in its box"] - 0.5


def test_layout_requests_default_to_the_models_grounding_fraction(toy_studio):
    """The toy GLIGEN grounds every step by default (SD1.5's GLIGEN: the first 30%)."""
    from studio.backend.models.modelsets import GLIGEN_FRACTION
    from studio.backend.tasks.layout import LayoutRequest

    filled = toy_studio.model_defaults(LayoutRequest, {"prompt": "a red circle"})
    assert (filled["width"], filled["height"], filled["gligen_fraction"]) == (64, 64, 1.0)
    assert toy_studio.model_defaults(LayoutRequest, {"gligen_fraction": 0.5})[
        "gligen_fraction"] == 0.5
    scene = evaluate.random_scene(evaluate.EVAL_SEED + 79)
    params = evaluate._params(2, prompt=scene.caption, boxes=scene.boxes())
    default = np.asarray(toy_studio.layout(params).image)
    assert np.array_equal(default, np.asarray(
        toy_studio.layout({**params, "gligen_fraction": 1.0}).image))
    assert not np.array_equal(default, np.asarray(
        toy_studio.layout({**params, "gligen_fraction": GLIGEN_FRACTION}).image))


def test_inpainting_paints_the_mask_and_keeps_the_rest(toy_studio, report):
    ev = evaluate.eval_inpaint(toy_studio, n=CI_CASES)
    report(ev)
    assert ev.metrics["right colour in mask"] >= 0.80
    assert ev.metrics["outside unchanged"] == 1.0


def test_extending_the_canvas_draws_the_prompt_there_and_keeps_the_original(toy_studio,
                                                                            report):
    """Outpainting: a scene extended by 32 px (each side in turn), "a blue square": the new
    area holds one (16 cases in `toyworld.evaluate`), the original 64 x 64 is bit-exact."""
    ev = evaluate.eval_outpaint(toy_studio, n=8)
    report(ev)
    assert ev.metrics["blue square in the new area"] >= 0.80
    assert ev.metrics["original bit-exact"] == 1.0


def test_make_it_colour_recolours_in_place(toy_studio, report):
    ev = evaluate.eval_instruct(toy_studio, n=CI_CASES)
    report(ev)
    assert ev.metrics["right colour"] >= 0.80
    assert ev.metrics["shape IoU >= 0.6"] >= 0.80


def test_named_shape_instruction_leaves_the_others(toy_studio, report):
    ev = evaluate.eval_instruct_named(toy_studio, n=24)
    report(ev)
    assert ev.metrics["named shape recoloured"] >= 0.75
    # recolouring everything (what "make it <colour>" does) would keep none of the others; the
    # toy UNet binds the name to its shape only partly (measured 46%)
    assert ev.metrics["other shapes kept"] >= 0.35


def test_textual_inversion_learns_a_concept_from_five_pictures(toy_studio, report):
    ev = evaluate.eval_textual_inversion(toy_studio, n=8)  # README: 16 (evaluate)
    report(ev)
    assert ev.metrics["concept with the learned token"] >= 0.75
    assert ev.metrics["concept with the initializer word"] <= 0.25


def test_seedselect_lifts_the_rare_colour(toy_studio, report):
    """Seed by seed: the image of a seed's own starting noise against SeedSelect's optimised
    one (same sampler), so the lift is SeedSelect's, not a luckier draw of seeds."""
    ev = evaluate.eval_seedselect(toy_studio)
    report(ev)
    # measured: 1 of 6 starting noises draws the purple triangle; optimised, 4 of 6 here and
    # 3 of 6 on CI's CPU (float rounding differs between CPUs, and 30 optimisation steps
    # amplify it), fixing 3 and 2 of the 5 misses. The bounds leave one image of slack.
    assert ev.metrics["SeedSelect"] >= ev.metrics["start noise (same seeds)"] + 0.2
    assert round(ev.metrics["misses fixed"] * ev.notes["misses"]) >= 2


def test_a_seed_reproduces_an_image_and_seeds_differ(toy_studio):
    a = toy_studio.txt2img(evaluate._params(5, prompt="a green triangle")).image
    b = toy_studio.txt2img(evaluate._params(5, prompt="a green triangle")).image
    c = toy_studio.txt2img(evaluate._params(6, prompt="a green triangle")).image
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_zero_weight_control_is_no_control(toy_studio):
    scene = evaluate.random_scene(evaluate.EVAL_SEED + 77)
    params = evaluate._params(3, prompt=scene.caption)
    plain = np.asarray(toy_studio.txt2img(params).image, np.int16)
    off = toy_studio.control({**params, "units": [
        {"type": "scribble", "image": scene.scribble(), "weight": 0}]}).image
    assert np.abs(np.asarray(off, np.int16) - plain).max() <= 2


def test_a_photo_through_the_canny_annotator_steers_the_shapes(toy_studio):
    """The photo -> annotator -> ControlNet path: a rendered scene, preprocessed by Canny."""
    scene = evaluate.random_scene(evaluate.EVAL_SEED + 78)
    out = toy_studio.control(evaluate._params(4, prompt=scene.caption, units=[
        {"type": "canny", "image": scene.render(), "preprocess": True, "resolution": 64}]))
    found = analyse(out.image)
    assert evaluate.iou(evaluate.foreground(out.image), evaluate.scene_mask(scene)) >= 0.5, found


def test_a_word_swap_keeps_the_picture(toy_studio, report):
    """Prompt-to-prompt: "... a blue square" -> "... a green square" at the same seed."""
    ev = evaluate.eval_word_swap(toy_studio, n=12)
    report(ev)
    # measured: layout kept 92%, square green 83%; a plain same-seed render keeps 17%
    assert ev.metrics["layout kept"] >= 0.8
    assert ev.metrics["square turned green"] >= 0.8
    assert ev.metrics["plain same-seed render keeps layout"] <= ev.metrics["layout kept"] - 0.5


def test_live_previews_show_the_picture(toy_studio, report):
    ev = evaluate.eval_previews(toy_studio, n=12)
    report(ev)
    assert ev.metrics["TAESD decode agrees"] >= 0.9
    assert ev.metrics["mean pixel error"] <= 0.05
    assert ev.metrics["last preview shows the colour"] >= 0.8


def test_a_click_selects_the_shape(toy_studio, report):
    """The trained toy SAM through the Edit tab's path: a click inside a shape gives its
    mask (IoU >= 0.7) in at least 85% of cases; its box does too (what a text mask sends)."""
    ev = evaluate.eval_sam_click(toy_studio)
    report(ev)
    assert ev.metrics["click IoU >= 0.7"] >= 0.85
    assert ev.metrics["box IoU >= 0.7"] >= 0.85



def test_words_select_the_named_shape(toy_studio, report):
    """The trained toy detector and SAM through `/text_mask`: "the <colour> <shape>" in a
    new scene of 2-3 shapes gives that shape's mask (IoU >= 0.6) in at least 80% of cases,
    and inpainting that mask changes no pixel of the other shapes."""
    ev = evaluate.eval_text_mask(toy_studio)
    report(ev)
    assert ev.metrics["IoU >= 0.6 with the named shape"] >= 0.8
    assert ev.metrics["inpaint kept the other shapes"] == 1.0


def test_hires_fix_keeps_the_objects_and_refines_them(toy_studio, report):
    """A 64 px image through hires fix to 128 px (denoise 0.5), latent and the toy
    upscaler model: shrunk back, the same objects (foreground IoU >= 0.7, same colours), and
    not just an enlarged copy. 6 of toyworld.evaluate's 12 cases."""
    ev = evaluate.eval_hires(toy_studio, n=6)
    report(ev)
    for name in evaluate.HIRES_UPSCALERS:
        assert ev.metrics[f"kept ({name})"] >= 0.80, name
        assert ev.metrics[f"changed ({name})"] == 1.0, name
