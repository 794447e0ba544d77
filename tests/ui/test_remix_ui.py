"""The Remix tab's strip logic (no browser): the requests it makes, and its bad input."""

from __future__ import annotations

import pytest

from studio.backend.requests import RequestError
from studio.ui.remix import strip_requests


def test_a_strip_runs_from_picture_one_to_picture_two_with_one_seed():
    reqs = strip_requests({"images": ["a.png", "b.png", "c.png"], "seed": -1, "steps": 3}, 5)
    assert [r["weights"] for r in reqs] == [[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75],
                                            [0, 1]]
    assert len({r["seed"] for r in reqs}) == 1 and reqs[0]["seed"] != -1
    assert all(r["images"] == ["a.png", "b.png"] and r["steps"] == 3 for r in reqs)
    assert {r["seed"] for r in strip_requests({"images": ["a", "b"], "seed": 7}, 2)} == {7}


@pytest.mark.parametrize(("data", "count", "message"), [
    ({"images": ["a.png"]}, 5, "upload at least two pictures"),
    ({"images": []}, 5, r"\(0 given\)"),
    ({"images": ["a", "b"]}, 1, "strip length must be between 2 and 9"),
    ({"images": ["a", "b"]}, 2.5, "strip length must be a whole number"),
])
def test_bad_strips_are_explained(data, count, message):
    with pytest.raises(RequestError, match=message):
        strip_requests(data, count)
