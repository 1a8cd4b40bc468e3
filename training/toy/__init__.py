"""The toy world: a tiny text-to-image latent diffusion model of coloured shapes, trained on CPU from seeds.

Modules: :mod:`.vocabulary` (prompts and ComfyUI's CLIP token ids), :mod:`.architecture` (the three networks),
:mod:`.bundle` (the shipped single-file format), :mod:`.build` (training from seeds), :mod:`.judge` (exact colour
geometry of generated images), :mod:`.sampling` (plain and steered sampling for the benchmark).
"""
