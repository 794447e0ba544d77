"""The logic behind the tabs' widgets, tested without a browser: clicks and box corners, mask
tools, the instruct history, the layout canvas, and the generated API handlers."""

from __future__ import annotations

import inspect
import json
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from studio.backend.requests import RequestError
from studio.backend.tasks.instruct import EditHistory
from studio.ui import edit, instruct, layout
from studio.ui.common import GenerationTab, request_values
from studio.ui.control import control_request


# ---------------------------------------------------------------------------- edit: clicks
def test_object_and_background_clicks_append_points():
    points, box, corner = edit.add_click("[]", "", None, edit.CLICK_MODES[0], 10, 20)
    points, box, corner = edit.add_click(points, box, corner, edit.CLICK_MODES[1], 30, 40)
    assert json.loads(points) == [[10, 20, 1], [30, 40, 0]] and box == "" and corner is None


def test_two_corner_clicks_make_a_box_in_either_order():
    mode = edit.CLICK_MODES[2]
    points, box, corner = edit.add_click("[]", "", None, mode, 50, 60)
    assert corner == [50, 60] and box == ""  # held until the second corner
    points, box, corner = edit.add_click(points, box, corner, mode, 10, 5)
    assert json.loads(box) == [10, 5, 50, 60] and corner is None and points == "[]"
    with pytest.raises(RequestError, match="too thin"):
        edit.add_click("[]", "", [10, 10], mode, 11, 40)


def test_undo_drops_the_last_click_then_the_box():
    assert edit.undo_click("[[1, 2, 1], [3, 4, 0]]", "[0, 0, 5, 5]") == (
        "[[1.0, 2.0, 1]]", "[0, 0, 5, 5]")
    assert edit.undo_click("[]", "[0, 0, 5, 5]") == ("[]", "")
    assert edit.undo_click("not json", "") == ("[]", "")


def test_sam_needs_an_object_click_or_a_box():
    assert not edit.has_prompt("[[3, 4, 0]]", "")  # a background click alone selects nothing
    assert edit.has_prompt("[[3, 4, 1]]", "")
    assert edit.has_prompt("[]", "[0, 0, 5, 5]")


# ---------------------------------------------------------------------------- edit: mask tools
@pytest.fixture()
def mask_file(tmp_path):
    m = np.zeros((40, 60), np.uint8)
    m[10:30, 20:40] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(m).save(path)
    return str(path)


def test_mask_tools_grow_shrink_invert_and_clear(mask_file):
    area = 20 * 20
    grown = np.asarray(edit.mask_tool("grow", mask_file, 3)) > 127
    shrunk = np.asarray(edit.mask_tool("shrink", mask_file, 3)) > 127
    inverted = np.asarray(edit.mask_tool("invert", mask_file, 3)) > 127
    assert grown.sum() > area > shrunk.sum() > 0
    assert inverted.sum() == 40 * 60 - area
    assert edit.mask_tool("clear", mask_file, 3) is None
    assert edit.mask_tool("shrink", mask_file, 50) is None  # nothing left of it
    with pytest.raises(RequestError, match="no mask yet"):
        edit.mask_tool("grow", None, 3)


def test_brush_strokes_become_the_mask():
    background = Image.new("RGB", (32, 24), "white")
    layer = Image.new("RGBA", (32, 24), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 150), (4, 4, 12, 10))
    mask = np.asarray(edit.brush_to_mask({"background": background, "layers": [layer]}))
    assert (mask > 127).sum() == 8 * 6
    assert edit.brush_to_mask({"background": background, "layers": []}) is None


# ---------------------------------------------------------------------------- instruct history
def test_edit_then_edit_again_then_branch_from_an_earlier_version():
    hist, base = EditHistory(), None
    hist, base, *_ = instruct.record_edit(hist, base, "orig.png", "v1.png", "make it winter")
    assert [v.path for v in hist.versions] == ["orig.png", "v1.png"] and base == 0
    assert instruct.again_request({"history": hist, "prompt": "x"})["image"] == "v1.png"
    *views, left = instruct.record_again(hist, "v2.png", "add snow")
    assert left == "v1.png" and hist.current == 2  # the left box shows what was edited
    *_, left = instruct.select_version(hist, SimpleNamespace(index=1))
    assert left == "v1.png" and len(hist) == 3  # selecting drops nothing
    instruct.record_again(hist, "v2b.png", "add fog")
    assert [v.path for v in hist.versions] == ["orig.png", "v1.png", "v2b.png"]


def test_edit_again_without_a_history_is_explained():
    with pytest.raises(gr.Error, match="Nothing to edit again"):
        instruct.again_request({"history": EditHistory()})


# ---------------------------------------------------------------------------- layout canvas
def test_canvas_becomes_normalised_boxes_and_the_reference_only_inside_boxes():
    canvas = {"image": Image.new("RGB", (200, 100)),
              "boxes": [{"xmin": 20, "ymin": 10, "xmax": 100, "ymax": 50, "label": "a cat"}]}
    boxes, image = layout.canvas_inputs(canvas, "generate")
    assert json.loads(boxes) == [{"phrase": "a cat", "box": [0.1, 0.1, 0.5, 0.5]}]
    assert image is None
    assert layout.canvas_inputs(canvas, "inside_boxes")[1].size == (200, 100)
    assert layout.boxes_preview(None) == "[]"
    assert layout.without_boxes(canvas)["boxes"] == []


# ---------------------------------------------------------------------------- handlers
def _detecting(found: list) -> SimpleNamespace:
    """A studio whose detector finds `found`; its tool methods are the Studio's own."""
    from studio.backend.service import Studio

    studio = SimpleNamespace(annotators=SimpleNamespace(detect=lambda img, t, thr: found))
    studio.layout_boxes = lambda *args, **kw: Studio.layout_boxes(studio, *args, **kw)
    return studio


def test_found_boxes_join_the_canvas_in_its_pixels():
    found = [{"box": [20.0, 10.0, 60.0, 50.0], "label": "the dog", "score": 0.8},
             {"box": [100.0, 0.0, 200.0, 100.0], "label": "the cup", "score": 0.5}]
    studio = _detecting(found)
    drawn = {"xmin": 0, "ymin": 0, "xmax": 10, "ymax": 10, "label": "a bird"}
    canvas = {"image": Image.new("RGB", (200, 100)), "boxes": [drawn]}
    out = layout.with_found_boxes(studio, canvas, "the dog. the cup", 0.3)
    assert out["boxes"][0] == drawn
    assert [(b["xmin"], b["ymin"], b["xmax"], b["ymax"], b["label"]) for b in out["boxes"][1:]]\
        == [(20, 10, 60, 50, "the dog"), (100, 0, 200, 100, "the cup")]
    full = {**canvas, "boxes": [drawn] * layout.MAX_BOXES}
    with pytest.raises(gr.Error, match="already has"):
        layout.with_found_boxes(studio, full, "the dog", 0.3)
    nothing = _detecting([])
    with pytest.raises(RequestError, match="nothing matching 'the cat'"):
        layout.with_found_boxes(nothing, canvas, "the cat", 0.3)


def test_found_objects_are_listed_and_dropped_from_the_view():
    info = {"boxes": [[1, 2, 30, 40], [5, 5, 20, 20]], "labels": ["the dog", "the cup"],
            "scores": [0.91, 0.4]}
    names = edit.object_choices(info)
    assert names == ["1. the dog (0.91)", "2. the cup (0.40)"]
    image, shown = edit.boxes_view("x.png", info, names[1:])
    assert image == "x.png" and shown == [((5, 5, 20, 20), "2. the cup (0.40)")]
    assert edit.boxes_view(None, info, names) is None


def test_widget_values_become_the_request():
    data = request_values(["prompt", "negative_prompt", "steps", "guidance_scale", "instruction"],
                          ["a cat", None, 20.0, 7.5, "go"], rename={"instruction": "prompt2"})
    assert data == {"prompt": "a cat", "negative_prompt": "", "steps": 20,
                    "guidance_scale": 7.5, "prompt2": "go"}


def test_control_api_values_join_images_and_units():
    data = control_request({"prompt": "x", "images": ["a.png"], "init_image": "",
                            "units": '[{"type": "canny"}]'})
    assert data["units"] == [{"type": "canny", "image": "a.png"}] and data["init_image"] is None


def test_generated_handler_has_the_api_signature_and_gets_the_session(tmp_path):
    calls = []

    class Backend:
        native_size = 64
        settings = SimpleNamespace(previews=False)

        def job_token(self, session, submitted):
            calls.append(("token", session))
            return "token"

        def run(self, task, data, progress, cancel, preview):
            calls.append((task, data, cancel, preview))
            path = tmp_path / "out.png"
            return SimpleNamespace(path=path, info={"seed": 1}, extra_images=[])

    tab = GenerationTab(Backend(), "txt2img", lambda *a: None)
    fn = tab.handler(["prompt", "image"], doc="Make it.", optional=("image",))
    params = inspect.signature(fn).parameters
    assert list(params) == ["prompt", "image", "request", "progress"]
    assert params["image"].default is None and fn.__doc__ == "Make it."
    assert fn.__annotations__["request"] is gr.Request  # gradio injects the session here
    assert inspect.isgeneratorfunction(fn)  # gradio streams what it yields
    (path, info), = fn("a cat", None, SimpleNamespace(session_hash="s1", request=None), None)
    assert calls[0] == ("token", "s1")
    # an optional parameter left out is left to the request's default; previews are off
    assert calls[1] == ("txt2img", {"prompt": "a cat"}, "token", None)
    assert json.loads(info) == {"seed": 1} and path.endswith("out.png")


def preview_backend(tmp_path, steps: int = 3):
    """A backend whose job shows `steps` previews, then waits for cancel or finishes."""
    from studio.backend.common import Cancelled, CancelToken, Result

    class Backend:
        native_size = 64
        settings = SimpleNamespace(previews=True)
        token = CancelToken()

        def job_token(self, session, submitted):
            return self.token

        def run(self, task, data, progress, cancel, preview):
            for step in range(1, steps + 1):
                preview(Image.new("RGB", (8, 8), (step, 0, 0)), step, steps + 1)
                time.sleep(0.05)  # the consumer takes each preview before the next
                if cancel.cancelled:
                    raise Cancelled("Cancelled: stopped")
            return Result(image=None, info={"seed": 1}, path=tmp_path / "out.png")

    return Backend()


def test_a_handler_streams_previews_then_the_result(tmp_path):
    backend = preview_backend(tmp_path)
    tab = GenerationTab(backend, "txt2img", lambda *a: None)
    out = list(tab.handler(["prompt"], doc="d", extra_outputs=1)("a cat", None, None))
    previews, final = out[:-1], out[-1]
    assert [json.loads(info)["preview"]["step"] for _, info, _ in previews] == [1, 2, 3]
    assert all(isinstance(im, Image.Image) for im, _, _ in previews)
    assert all(isinstance(extra, type(gr.skip())) for _, _, extra in previews)  # untouched
    assert final[0].endswith("out.png") and json.loads(final[1]) == {"seed": 1}


def test_a_client_that_stops_listening_stops_the_job(tmp_path):
    backend = preview_backend(tmp_path, steps=40)
    tab = GenerationTab(backend, "txt2img", lambda *a: None)
    stream = tab.handler(["prompt"], doc="d")("a cat", None, None)
    next(stream)  # the first preview
    stream.close()  # the client went away (gradio closes the generator)
    assert backend.token.cancelled


def test_an_error_of_the_job_reaches_the_stream(tmp_path):
    from studio.ui.common import streamed

    def work(preview):
        preview(Image.new("RGB", (4, 4)), 1, 3)
        raise ValueError("bad")

    from studio.backend.common import CancelToken

    with pytest.raises(ValueError, match="bad"):
        list(streamed(work, CancelToken()))


def test_the_visitor_address_comes_from_trusted_proxies_only(monkeypatch):
    from studio.ui.queue_guard import client_address

    def request(host: str, forwarded: str = "") -> SimpleNamespace:
        headers = {"x-forwarded-for": forwarded} if forwarded else {}
        return SimpleNamespace(client=SimpleNamespace(host=host), headers=headers)

    monkeypatch.delenv("SPACE_ID", raising=False)
    proxies = frozenset({"10.0.0.2", "10.0.0.3"})
    assert client_address(request("203.0.113.5", "1.2.3.4"), proxies) == "203.0.113.5"
    assert client_address(request("10.0.0.2", "1.2.3.4"), proxies) == "1.2.3.4"
    # a client's own forged entries come first; the proxies append what they saw last
    assert client_address(request("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.3"), proxies) \
        == "1.2.3.4"
    assert client_address(request("10.0.0.2"), proxies) == "10.0.0.2"
    monkeypatch.setenv("SPACE_ID", "me/studio")  # behind the platform's proxy
    assert client_address(request("10.9.9.9", "1.2.3.4"), frozenset()) == "1.2.3.4"
    assert client_address(None, proxies) == ""


def test_inpaint_sketch_paints_the_image_and_masks_the_paint() -> None:
    """The Edit tab's "Sketch colours": the paint lands on the image, its area is the mask,
    strength 1 drops to 0.75 so the colours guide; erasing every stroke restores the image."""
    import numpy as np
    from PIL import Image

    from studio.ui.edit import SKETCH_STRENGTH, sketch_inputs

    background = Image.new("RGBA", (32, 32), (200, 200, 200, 255))
    layer = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((30, 180, 30, 255), (8, 8, 16, 16))
    image, mask, strength = sketch_inputs({"background": background, "layers": [layer]}, 1.0)
    px = np.asarray(image)
    assert (px[8:16, 8:16] == [30, 180, 30]).all() and (px[0, 0] == [200, 200, 200]).all()
    assert (np.asarray(mask) > 0).sum() == 64 and strength == SKETCH_STRENGTH
    _, _, kept = sketch_inputs({"background": background, "layers": [layer]}, 0.5)
    assert kept.__class__.__name__ != "float"  # a strength the user chose stays
    erased = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image, mask, _ = sketch_inputs({"background": background, "layers": [erased]}, 0.75)
    assert mask is None and (np.asarray(image) == 200).all()


def test_an_empty_hires_prompt_widget_is_empty_text():
    """A Textbox the browser never touched sends None; the hires prompt is text ("" = the
    same prompt), as the other prompts are."""
    data = request_values(["hires_prompt", "hires_scale"], [None, 2.0])
    assert data == {"hires_prompt": "", "hires_scale": 2}
