"""Shared fixtures: the tiny annotator weights, built once per session, offline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.threads import one_torch_thread


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    """One torch thread for this package's tests (see tests/support/threads.py)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny_sources(tmp_path_factory) -> dict[str, str]:
    from annotators.tiny import build_tiny_annotator_weights

    return build_tiny_annotator_weights(tmp_path_factory.mktemp("tiny-annotators"), seed=0)


@pytest.fixture(scope="session")
def tiny_sam(tiny_sources):
    from annotators import get_annotator

    return get_annotator("sam", tiny_sources["sam"], offline=True)


@pytest.fixture()
def photo() -> np.ndarray:
    """A 640x360 RGB test picture: gradient background, a bright square, a dark disc."""
    h, w = 360, 640
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 120, w, dtype=np.uint8)[None, :]
    img[..., 2] = np.linspace(0, 120, h, dtype=np.uint8)[:, None]
    img[100:200, 100:250] = 230
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 180) ** 2 + (xx - 470) ** 2 < 60**2] = 20
    return img
