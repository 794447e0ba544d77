"""Shared fixtures: the tiny annotator weights, built once per session, offline."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="package", autouse=True)
def _one_torch_thread():
    # The tiny models are far too small to gain from threads; on a busy 2-core runner torch's
    # spinning thread pool makes them 5-10x slower. Restored after this package's tests.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
