"""The A1111-compatible API means what it says, in the toy world: through `webuiapi`, the
prompted colour appears, a sketch unit is followed, and a mask is repainted while the rest
stays (judged by the toy world's classical analyser)."""

from __future__ import annotations

import numpy as np
import pytest
import webuiapi

from toyworld import evaluate
from toyworld.analyse import analyse

pytestmark = pytest.mark.slow


def params(seed: int) -> dict:
    return {"seed": seed, "steps": 20, "cfg_scale": 7.5, "width": 64, "height": 64,
            "sampler_name": "Euler a", "alwayson_scripts": {}}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from studio.ui.app import build_app, launch_options

    studio = evaluate.toy_studio(work=tmp_path_factory.mktemp("a1111-toy"))
    demo = build_app(studio)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(studio.settings, studio, server_port=None))
    try:
        yield webuiapi.WebUIApi(host="127.0.0.1", port=int(url.rstrip("/").rsplit(":", 1)[1]))
    finally:
        demo.close()


def test_the_prompted_colour_appears(api):
    hits = 0
    for i, (colour, kind) in enumerate([("red", "circle"), ("blue", "square"),
                                        ("yellow", "triangle"), ("green", "circle")]):
        top = analyse(api.txt2img(prompt=f"a {colour} {kind}", **params(10 + i)).image)
        hits += bool(top and top[0].colour == colour)
    assert hits >= 3


def test_a_sketch_unit_is_followed(api):
    ious = []
    for i in range(4):
        scene = evaluate.random_scene(evaluate.EVAL_SEED + 1000 + 2 * i)
        unit = webuiapi.ControlNetUnit(image=scene.scribble(), module="none",
                                       model="controlnet-scribble", resize_mode="Just Resize")
        image = api.txt2img(prompt=scene.caption, controlnet_units=[unit],
                            **params(20 + i)).image
        ious.append(evaluate.iou(evaluate.foreground(image), evaluate.scene_mask(scene)))
    assert sum(v >= 0.6 for v in ious) >= 3, ious


def test_the_mask_is_repainted_and_the_rest_kept(api):
    scene = evaluate.random_scene(evaluate.EVAL_SEED + 3000)
    old = scene.shapes[0]
    colour = next(c for c in ("blue", "red", "yellow") if c != old.colour)
    mask = evaluate.box_mask(old.box, grow=3)
    source = scene.render()
    result = api.img2img(images=[source], mask_image=evaluate._mask_image(mask),
                         prompt=f"a {colour} square", denoising_strength=1.0, mask_blur=1,
                         inpaint_full_res=False, **params(7)).image
    out = np.asarray(result.convert("RGB"))
    assert np.array_equal(out[~mask], np.asarray(source)[~mask])
    inside = [f for f in analyse(out) if mask[int(f.centroid[1]), int(f.centroid[0])]]
    assert inside and inside[0].colour == colour
