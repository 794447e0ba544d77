"""The pose editor's server side (no browser): its template, its script, the JSON box text."""

from __future__ import annotations

import json
import re

from annotators.openpose import BODY_MIRROR
from studio.ui.pose_editor import TEMPLATE, editor_script, pose_editor, pose_text
from tests.annotators.test_pose_json import PIXELS


def test_the_json_box_text_is_the_same_json_one_triplet_per_line():
    text = pose_text(PIXELS)
    assert json.loads(text) == PIXELS
    assert "\n        100.0, 20.0, 1.0,\n" in text  # the nose: x, y, confidence
    assert json.loads(pose_text({"canvas_width": 8, "canvas_height": 8, "people": []}))
    odd = {"people": [1, 2]}  # not a pose: plain indented JSON
    assert json.loads(pose_text(odd)) == odd


def test_the_template_survives_gradios_template_evaluation_and_the_script_ships():
    # gr.HTML evaluates html_template as Handlebars and a JS template literal
    assert not re.search(r"\$\{|\{\{|`", TEMPLATE)
    script = editor_script()
    assert 'trigger("input")' in script and 'watch("value"' in script
    js_mirror = re.search(r"const BODY_MIRROR = \[([^\]]*)\]", script).group(1)
    assert [int(v) for v in js_mirror.split(",")] == list(BODY_MIRROR)
    editor = pose_editor("x-pose-editor", visible=False)
    assert editor.js_on_load == script and editor.value == ""
