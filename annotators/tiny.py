"""Tiny random annotator weights for the studio's `tiny` model set (offline tests, CI).

`build_tiny_annotator_weights(folder)` writes, in a second or two and well under 1 MB:

- `depth/`: a miniature DPT-Hybrid (BiT + ViT) saved with `save_pretrained` (config.json,
  model.safetensors, preprocessor_config.json), the layout of `Intel/dpt-hybrid-midas`.
- `openpose/`: `body_pose_model.pth`, `hand_pose_model.pth`, `facenet.pth` with the official
  files' names and key layout (plain tensor dicts, readable with `weights_only=True`). The
  OpenPose networks have no config, and at full width they are ~125M parameters (~250 MB
  even in fp16), so these are controlnet_aux's *same* networks (same layers, kernels,
  strides, stages, 38/19/22/71-channel heads) with every hidden layer 16x narrower. The
  loader reads layer widths from the checkpoint, so official files build the full networks
  and these build the narrow ones, through the same code. Output heads are zero, so the
  tiny detector sees nobody (random heatmaps would only make the pose parser slow); drawing
  and the keypoint JSON are tested with given keypoints.
- `sam/sam_tiny.safetensors`: a segment_anything `Sam` with a 2-block, 32-wide ViT encoder
  and a 32-wide decoder at SAM's real 1024 px input size (so the coordinate transforms are
  the real ones); its architecture is read back from the tensor shapes on load.
- `grounding/`: a miniature Grounding DINO (Swin + BERT) with its processor, saved with
  `save_pretrained` in the layout of `IDEA-Research/grounding-dino-tiny`.

Random weights detect nothing meaningful: their job is to prove the wiring.
"""

from __future__ import annotations

from pathlib import Path

NARROW = 16  # hidden-width divisor for the tiny OpenPose networks
_OPENPOSE_HEADS = {"body": 38 + 19, "hand": 22, "face": 71}  # channels concatenated per stage
_OPENPOSE_TRUNK = 128  # width of the shared feature map concatenated with the heads


def _tiny_depth(folder: Path, seed: int) -> None:
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    config = DPTConfig(
        image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=37, is_hybrid=True,
        backbone_out_indices=[0, 1, 2, 3],
        backbone_config={"global_padding": "same", "layer_type": "bottleneck",
                         "depths": [1, 1, 1], "hidden_sizes": [8, 16, 32],
                         "out_features": ["stage1", "stage2", "stage3"],
                         "embedding_dynamic_padding": True, "embedding_size": 8,
                         "num_groups": 4},
        backbone_featmap_shape=[1, 32, 4, 4], neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, reassemble_factors=[1, 1, 1, 0.5], use_auxiliary_head=False,
    )
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config).eval()
    with torch.no_grad():  # keep the final ReLU open so the random depth is not all zeros
        last = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.fill_(1.0)
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False,
                      image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)


def _tiny_openpose_state(kind: str, seed: int) -> dict:
    import torch

    from ._cnaux import cnaux
    from .openpose import _HEADS

    op = cnaux("open_pose")
    template = {"body": op.model.bodypose_model, "hand": op.model.handpose_model,
                "face": op.face.FaceNet}[kind]
    with torch.device("meta"):
        net = template()
    heads, concat = _OPENPOSE_HEADS[kind], _OPENPOSE_HEADS[kind] + _OPENPOSE_TRUNK

    def narrow_in(c: int) -> int:
        if c == 3:
            return 3
        return heads + _OPENPOSE_TRUNK // NARROW if c == concat else max(4, c // NARROW)

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, conv in net.named_modules():
        if not isinstance(conv, torch.nn.Conv2d):
            continue
        is_head = bool(_HEADS[kind].search(name.rsplit(".", 1)[-1]))
        c_out = conv.out_channels if is_head else max(4, conv.out_channels // NARROW)
        c_in = narrow_in(conv.in_channels)
        shape = (c_out, c_in, *conv.kernel_size)
        fan_in = c_in * conv.kernel_size[0] * conv.kernel_size[1]
        weight = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        key = name if kind == "face" else name.split(".", 1)[1]  # official key layout
        state[f"{key}.weight"] = torch.zeros(shape) if is_head else weight
        state[f"{key}.bias"] = torch.zeros(c_out)
    return state


def _tiny_openpose(folder: Path, seed: int) -> None:
    import torch

    from .openpose import OPENPOSE_FILES, build_openpose_net

    folder.mkdir(parents=True, exist_ok=True)
    for i, (kind, filename) in enumerate(OPENPOSE_FILES.items()):
        state = _tiny_openpose_state(kind, seed + i)
        net = build_openpose_net(kind, state)  # also proves the widths chain up
        with torch.no_grad():
            net(torch.zeros(1, 3, 32, 32))
        torch.save(state, folder / filename)


def _tiny_sam(path: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    from .sam import SamConfig, build_sam

    config = SamConfig(
        encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
        encoder_global_attn_indexes=(1,), prompt_embed_dim=32, decoder_mlp_dim=64,
        iou_head_hidden_dim=32,
    )
    torch.manual_seed(seed)
    sam = build_sam(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sam.state_dict().items()}, str(path),
              metadata={"format": "pt", "note": "tiny random SAM for tests"})


BUILT = ("depth", "openpose", "sam", "grounding")  # what build_tiny_annotator_weights writes
VERSION = "3"  # bumped when a tiny annotator changes: cached builds are rebuilt
# The tiny detector's words: what the tests and the toy world ask for (others are [UNK])
_GROUNDING_WORDS = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "a", "an", "the", "of", "and",
    "left", "right", "cat", "dog", "cup", "bowl", "hat", "person", "red", "green", "blue",
    "yellow", "purple", "orange", "circle", "square", "triangle", "shape",
)


def _tiny_grounding(folder: Path, seed: int) -> None:
    """A 0.4M-parameter Grounding DINO (Swin + BERT, 1 encoder and 2 decoder layers), saved
    with its processor in the layout of IDEA-Research/grounding-dino-tiny."""
    import torch

    from .grounding import small_grounding_dino

    torch.manual_seed(seed)
    model, processor = small_grounding_dino(
        _GROUNDING_WORDS,
        backbone={"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                  "window_size": 4, "image_size": 64},
        text={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "intermediate_size": 37, "max_position_embeddings": 256},
        # 128 px at least: the smallest of its 4 feature levels stays 2x2 (GroupNorm needs > 1)
        image_sizes=(128, 256),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30,
        num_feature_levels=4, max_text_len=256,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)


def build_tiny_annotator_weights(folder: Path, seed: int = 0) -> dict[str, str]:
    """Write tiny random weights for depth, openpose, sam and grounding under `folder`.

    Returns the sources dict {annotator name: path} that `get_annotator(name, source=...)` and
    the AnnotatorService accept; canny and scribble need no weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources = {
        "depth": folder / "depth",
        "openpose": folder / "openpose",
        "sam": folder / "sam" / "sam_tiny.safetensors",
        "grounding": folder / "grounding",
    }
    _tiny_depth(sources["depth"], seed)
    _tiny_openpose(sources["openpose"], seed + 10)
    _tiny_sam(sources["sam"], seed + 20)
    _tiny_grounding(sources["grounding"], seed + 30)
    return {name: str(path) for name, path in sources.items()}
