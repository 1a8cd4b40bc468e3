"""Learn-to-Steer, framework-agnostic: the method of Yiflach, Atzmon & Chechik (WACV 2026, arXiv 2509.02295).

Modules, one concept each:

* ``relations``  — the four spatial relations and their aliases.
* ``prompts``    — rule-based parsing of prompts into (subject, relation, object) triplets with character spans.
* ``tokens``     — where a phrase's tokens sit on a text encoder's token axis.
* ``families``   — model families (SD1.x, SD2.x, SDXL, SD3, FLUX.1, toy) and their attention layouts.
* ``layout``     — the contract from captured attention maps to the classifier input (B, 2, C, S, S).
* ``steps``      — which classifier step index a denoising step uses.
* ``classifier`` — the published relation classifier, with its exact state-dict names.
* ``checkpoint`` — our safetensors checkpoint format, and safe loading/conversion of official ``.pth`` files.
* ``optimize``   — the test-time optimisation of the latent (a pure function over a maps closure).
* ``presets``    — the official steering settings per family.

Only torch, numpy, safetensors and the standard library are imported here: never ComfyUI, never diffusers.
"""

__version__ = "0.1.0"
