"""The toy world: a miniature, exactly-described world of flat coloured shapes.

`scenes` generates seeded 64x64 scenes with captions and everything the tabs need (edge and
scribble maps, boxes with phrases, masks, before/after pairs with instructions), including a
deliberately rare colour for SeedSelect. `analyse` is the classical analyser the semantic
tests use to check what a generated image shows (colour, shape, centroid, mask IoU).
Nothing here imports torch, diffusers or gradio.
"""
