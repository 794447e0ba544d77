"""The named API is a stable contract: exactly the task table's endpoints, nothing unnamed
leaking."""

from __future__ import annotations

from studio.backend.tasks import TASKS

EXPECTED = {f"/{name}" for name in TASKS}
STABLE = {
    "/txt2img", "/annotate", "/control", "/layout", "/sam_mask", "/inpaint", "/instruct",
    "/concept_train", "/concepts", "/concept_import", "/seedselect", "/cancel", "/history",
}
COMMON = ["prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height",
          "scheduler", "fast"]


def test_exactly_the_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == EXPECTED
    assert STABLE <= EXPECTED  # endpoints may be added, never removed or renamed
    assert not api["unnamed_endpoints"]


def test_generating_endpoints_take_the_common_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name in ("/txt2img", "/control", "/layout"):
        params = [p["parameter_name"] for p in api[name]["parameters"]]
        assert params[: len(COMMON)] == COMMON, name
    inpaint = [p["parameter_name"] for p in api["/inpaint"]["parameters"]]
    assert inpaint[:3] == ["image", "mask", "prompt"] and set(COMMON) <= set(inpaint)
    instruct = [p["parameter_name"] for p in api["/instruct"]["parameters"]]
    assert instruct[:4] == ["image", "instruction", "text_guidance", "image_guidance"]


def test_history_takes_limit_query_offset_all_optional(client):
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"][
        "/history"]["parameters"]
    assert [(p["parameter_name"], p["parameter_has_default"], p["parameter_default"])
            for p in params] == [("limit", True, 50), ("query", True, ""), ("offset", True, 0)]
