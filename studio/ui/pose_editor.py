"""The Control tab's OpenPose editor: drag joints, add / remove / mirror / move / scale people,
undo, import and export OpenPose JSON, over the same keypoints as the JSON box.

A `gr.HTML` whose value is the pose as OpenPose JSON text; its browser side is plain
JavaScript shipped next to this module (`pose_editor.js`, no build step, nothing from a CDN).
A finished edit sets the value and fires the component's `input` event: the server checks the
JSON, draws the map with the openpose annotator's `draw_pose` and updates the JSON box. Setting
the value from the server (a preview, a re-render of the JSON box) loads it into the editor.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import gradio as gr

HERE = Path(__file__).resolve().parent

# (action, label, tooltip): the toolbar; pose_editor.js acts on data-action
BUTTONS = (
    ("add", "Add person", "A standing person in the middle"),
    ("remove", "Remove", "Remove the selected person (Delete)"),
    ("mirror", "Mirror", "Swap left and right of the selected person"),
    ("bigger", "Bigger", "Scale the selected person up (or the wheel)"),
    ("smaller", "Smaller", "Scale the selected person down (or the wheel)"),
    ("undo", "Undo", "Undo the last edit (Ctrl+Z)"),
    ("import", "Import JSON", "Load an OpenPose JSON file (pixels or normalised)"),
    ("export", "Export JSON", "Save the pose as OpenPose JSON"),
)
TEMPLATE = f"""
<div class="pose-editor">
  <div class="pose-toolbar">
    {"".join(f'<button type="button" data-action="{a}" title="{t}">{label}</button>'
             for a, label, t in BUTTONS)}
    <input class="pose-file" type="file" accept=".json,application/json" hidden>
  </div>
  <canvas class="pose-canvas" tabindex="0" width="512" height="512"></canvas>
  <div class="pose-status"></div>
  <div class="pose-hint">Drag a joint to move it. Shift+drag a joint, or drag inside the
  selected person's box, to move the whole person; the wheel scales it. Ctrl+Z undoes.</div>
</div>
"""

CSS = """
.pose-editor { display: flex; flex-direction: column; gap: 6px; }
.pose-toolbar { display: flex; flex-wrap: wrap; gap: 4px; }
.pose-toolbar button { padding: 2px 8px; border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-sm); background: var(--button-secondary-background-fill);
  color: var(--button-secondary-text-color); font-size: var(--text-sm); cursor: pointer; }
.pose-canvas { width: 100%; max-width: 512px; height: auto; background: #000;
  touch-action: none; cursor: crosshair; outline: none; }
.pose-canvas:focus { box-shadow: 0 0 0 2px var(--color-accent); }
.pose-status, .pose-hint { font-size: var(--text-sm); color: var(--body-text-color-subdued); }
"""


@cache
def editor_script() -> str:
    """The editor's JavaScript (read once from the package)."""
    return (HERE / "pose_editor.js").read_text(encoding="utf-8")


def pose_editor(elem_id: str, visible: bool = True) -> gr.HTML:
    """The editor component; its value is the pose as OpenPose JSON text ("" = none yet)."""
    return gr.HTML(value="", html_template=TEMPLATE, css_template=CSS,
                   js_on_load=editor_script(), label="Pose editor", elem_id=elem_id,
                   visible=visible, container=True, padding=True)


def compact_json(keypoints: Any) -> str:
    """Keypoints as one-line JSON text (the editor's value)."""
    return keypoints if isinstance(keypoints, str) else json.dumps(keypoints)


def pose_text(pose: dict[str, Any]) -> str:
    """OpenPose JSON for the JSON box: indented, one [x, y, confidence] triplet per line."""

    def value(v: Any, indent: str) -> str:
        if not (isinstance(v, list) and v and all(isinstance(n, (int, float)) for n in v)):
            return json.dumps(v)
        rows = [", ".join(json.dumps(n) for n in v[i:i + 3]) for i in range(0, len(v), 3)]
        return f"[\n{indent}  " + f",\n{indent}  ".join(rows) + f"\n{indent}]"

    def obj(d: dict[str, Any], indent: str) -> str:
        inner = indent + "  "
        items = [f"{inner}{json.dumps(k)}: {value(v, inner)}" for k, v in d.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"

    people = pose.get("people")
    if not (isinstance(people, list) and all(isinstance(p, dict) for p in people)):
        return json.dumps(pose, indent=2)
    top = {k: v for k, v in pose.items() if k != "people"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in top.items()]
    listed = ",\n".join(f"    {obj(person, '    ')}" for person in people)
    lines.append('  "people": ' + (f"[\n{listed}\n  ]" if people else "[]"))
    return "{\n" + ",\n".join(lines) + "\n}"
