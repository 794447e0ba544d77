"""The toy world: a miniature, exactly-described world of flat coloured shapes.

- `scenes`: seeded 64x64 scenes with captions and everything the tabs need (edge and scribble
  maps, boxes with phrases, masks, before/after pairs with instructions), including a
  deliberately rare colour for SeedSelect and a held-out shape for textual inversion.
- `analyse`: the classical analyser that says what an image shows (colour, shape, centroid,
  mask IoU).
- `train`: trains the toy model set (VAE, CLIP text and image towers, base, ControlNet,
  inpainting, InstructPix2Pix and GLIGEN UNets) that ships in `assets/toy`.
- `evaluate`: measures those models through the studio's own backend; the semantic tests
  assert on it.

`scenes` and `analyse` import no torch, diffusers or gradio; `train` and `evaluate` need torch.
"""
