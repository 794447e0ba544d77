"""Weight resolution and safe loading: clear errors offline, pickles refused."""

from __future__ import annotations

import pytest
import torch

from annotators import MissingWeightsError, WeightsFormatError, get_annotator
from annotators.weights import load_state_dict, parse_hub_source


class _Planted:
    """Unpickling this would create a file: proof that code ran during loading."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "body_pose_model.pth"
    torch.save({"conv1_1.weight": torch.zeros(1), "x": _Planted(str(marker))}, evil)
    with pytest.raises(WeightsFormatError, match="Refusing to load"):
        load_state_dict(evil, annotator="openpose")
    with pytest.raises(WeightsFormatError):
        get_annotator("openpose", tmp_path, offline=True)
    assert not marker.exists()


def test_broken_safetensors(tmp_path):
    bad = tmp_path / "sam.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsFormatError, match="not a valid safetensors"):
        get_annotator("sam", bad)


@pytest.mark.parametrize("name, names", [
    ("openpose", ["body_pose_model.pth", "lllyasviel/Annotators"]),
    ("sam", ["sam_vit_b_01ec64.pth", "ybelkada/segment-anything"]),
])
def test_offline_without_weights_names_file_repo_and_fix(name, names, tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        get_annotator(name, cache_dir=tmp_path, offline=True)
    message = str(err.value)
    for part in [*names, "hf download", "offline", "local file or folder"]:
        assert part in message
    assert isinstance(err.value, ValueError) and isinstance(err.value, FileNotFoundError)


def test_local_sources(tmp_path, tiny_sources):
    with pytest.raises(MissingWeightsError, match="body_pose_model.pth.*in the folder"):
        get_annotator("openpose", tmp_path)
    with pytest.raises(MissingWeightsError, match="neither an existing local"):
        get_annotator("sam", "./no/such/sam.pth")
    with pytest.raises(WeightsFormatError, match="Not an OpenPose body checkpoint"):
        get_annotator("openpose", tiny_sources["sam"])
    with pytest.raises(WeightsFormatError, match="Not a segment_anything SAM checkpoint"):
        get_annotator("sam", f"{tiny_sources['openpose']}/body_pose_model.pth")


def test_hub_source_parsing():
    assert parse_hub_source("lllyasviel/Annotators") == ("lllyasviel/Annotators", None)
    assert parse_hub_source("ybelkada/segment-anything/checkpoints/sam_vit_b_01ec64.pth") == (
        "ybelkada/segment-anything", "checkpoints/sam_vit_b_01ec64.pth")
    assert parse_hub_source("./models/sam.pth") is None
    assert parse_hub_source("models/sam.pth") is None  # a (missing) local file, not a repo
    assert parse_hub_source("a b/c") is None
