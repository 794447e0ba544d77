"""What Remix means in the toy world: the trained toy IP-Adapter on the toy CLIP image tower,
with that tower's text projection for text diffs (toyworld.train stages `ip_adapter` and
`clip_text`), judged by the classical analyser through the studio's real backend."""

from __future__ import annotations

import numpy as np
import pytest

from toyworld import evaluate

pytestmark = pytest.mark.slow


def test_a_variation_keeps_colour_and_shape(toy_studio, report):
    ev = evaluate.eval_remix_variation(toy_studio, n=12)
    report(ev)
    assert ev.metrics["colour and shape kept"] >= 0.80


def test_an_interpolation_strip_runs_from_one_picture_to_the_other(toy_studio, report):
    ev = evaluate.eval_remix_interpolation(toy_studio, n=6)  # README: 12 (evaluate)
    report(ev)
    assert ev.metrics["ends right"] >= 0.80
    assert ev.metrics["strip monotone"] >= 0.75


def test_a_text_diff_turns_the_red_circle_blue(toy_studio, report):
    ev = evaluate.eval_remix_text_diff(toy_studio, n=12)
    report(ev)
    assert ev.metrics["blue circle"] >= 0.80
    # the diff does the work: the same picture without it stays a red circle
    assert ev.metrics["without the diff: red circle"] >= 0.80


def test_the_toy_set_has_the_remix_models(toy_studio):
    ms = toy_studio.model_set
    assert ms.get("ip_adapter").endswith("ip-adapter") and ms.get("ip_text").endswith("clip-text")
    picture = evaluate.one_shape("square", "green", 3)
    params = evaluate._params(3, images=[picture], prompt="")
    first = toy_studio.run("remix", params)
    assert np.array_equal(np.asarray(first.image),
                          np.asarray(toy_studio.regenerate(str(first.path)).image))
