"""Learn-to-Steer, framework-agnostic: the method of Yiflach, Atzmon & Chechik (WACV 2026, arXiv 2509.02295).

Modules, one concept each:

* ``relations``  — the four spatial relations and their aliases.
* ``prompts``    — rule-based parsing of prompts into (subject, relation, object) triplets with character spans.
* ``emphasis``   — ComfyUI's prompt-weight syntax ``(word:1.2)``, mapped back to the prompt as written.
* ``tokens``     — where a phrase's tokens sit on a text encoder's token axis.
* ``families``   — model families (SD1.x, SD2.x, SDXL, SD3, FLUX.1, toy): attention layouts, steering and training
                   recipes, in one table.
* ``attention``  — the one definition of the attention maps (cross and joint), the map request, the UNet grid rule.
* ``layout``     — the contract from captured attention maps to the classifier input (B, 2, C, S, S).
* ``steps``      — which classifier step index a denoising step uses.
* ``classifier`` — the published relation classifier, with its exact state-dict names.
* ``checkpoint`` — our safetensors checkpoint format; loading any classifier file, converting official ones.
* ``official_checkpoint`` — the authors' ``.pth`` files: read safely, their family told from name or configs.
* ``loaded_classifier`` — a loaded classifier, and the checks every checkpoint format passes (relations, weights).
* ``safe_load``  — ``torch.load(weights_only=True)`` with refusals that say why (dangerous, empty, damaged).
* ``fields``     — typed checks of checkpoint metadata fields, with messages naming file and field.
* ``optimize``   — the test-time optimisation of the latent (a pure function over a maps closure).
* ``steer``      — one steered denoising step over a "run the denoiser and record" closure (nodes, toy, benchmark).
* ``settings``   — steering settings as the nodes and the toy benchmark resolve them against the family's recipe.
* ``convert``    — ``python -m l2s_core.convert``: official ``.pth`` to this pack's format.
* ``toy_bundle`` — the single-file format of the toy world's model (read by the Load Toy World node).

Only torch, numpy, safetensors and the standard library are imported here: never ComfyUI, never diffusers.
"""

__version__ = "0.1.0"
