"""Send to without a browser: targets get what they take, bad sends are explained."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from studio.ui.sendto import SendTo, Target, added_file, stored_values


class Widget:
    """Stands in for a component (the handler only needs distinct objects)."""


def _handler(studio):
    send = SendTo(studio)
    photo, pictures = Widget(), Widget()
    send.target(Target("Edit", "edit", [photo], lambda path: [path]))
    send.target(Target("Remix", "remix", [pictures],
                       lambda path, current: [added_file(path, current, 4)], [pictures]))
    labels = send.labels()
    outputs, inputs = [photo, pictures], [pictures]
    return send._handler(labels, outputs, inputs)


def test_the_chosen_target_gets_the_image_and_the_others_are_left_alone(studio):
    made = studio.txt2img({"prompt": "a cat", "seed": 1, "steps": 1, "width": 64,
                           "height": 64})
    handler = _handler(studio)
    out = handler("Remix", str(made.path), ["a.png", "b.png", "c.png", "d.png"])
    assert out[1] == ["b.png", "c.png", "d.png", str(made.path)]  # 4 at most: oldest dropped
    assert isinstance(out[0], type(gr.skip())) and out[-1].selected == "remix"
    out = handler("Edit", str(made.path), None)
    assert out[0] == str(made.path)
    assert stored_values(studio, str(made.path), ["prompt", "seed", "nope"])[:2] == ["a cat", 1]


def test_bad_sends_are_explained(studio):
    handler = _handler(studio)
    made = studio.txt2img({"prompt": "a dog", "seed": 2, "steps": 1, "width": 64,
                           "height": 64})
    with pytest.raises(gr.Error, match="Pick where to send"):
        handler("Nowhere", str(made.path), None)
    with pytest.raises(gr.Error, match="no image to send"):
        handler("Edit", None, None)
    # the tests allow their temporary folders; a system file is outside any allowed one
    with pytest.raises(Exception, match="only files uploaded with the request or made by"):
        handler("Edit", "/etc/hostname", None)
    made.path.unlink()  # a result deleted since it was shown
    with pytest.raises(Exception, match="was not found"):
        handler("Edit", str(made.path), None)
    plain = studio.outputs.folder / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(gr.Error, match="carries no studio parameters"):
        stored_values(studio, str(plain), ["prompt"])


def test_file_lists_take_paths_or_file_dicts() -> None:
    assert added_file("n.png", None, 20) == ["n.png"]
    assert added_file("n.png", [{"path": "a.png"}, "b.png"], 20) == ["a.png", "b.png", "n.png"]
