"""Run under ComfyUI's Python: capture attention in every tiny family and print what was captured as JSON.

Invoked by tests/nodes/test_capture_families.py in a separate process (ComfyUI must not share the test process: its
top-level ``nodes`` module would clash with this pack's ``nodes`` package). Usage:

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/comfy_checks/capture_check.py FAMILY [IMAGE_SIDE]

The pack's own capture path is exercised: Spatial Prompt Encode's spec, the steering sampler's private
model_options with the attention override, ComfyUI's calc_cond_batch on the positive conditioning, and the l2s_core
layout that turns the recorded layers into the classifier input.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from check_support import load_pack  # noqa: E402  (this folder is on sys.path)

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def main() -> None:
    family = sys.argv[1]
    side = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    sys.path.insert(0, str(TESTS))  # for comfy_test_pack
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import comfy.sample
    import comfy.samplers
    import node_helpers
    import torch
    from comfy_test_pack.tiny_models import build_tiny_models

    load_pack()
    layout_mod = importlib.import_module("l2s_pack.l2s_core.layout")
    steering = importlib.import_module("l2s_pack.nodes.steering")
    capture_mod = importlib.import_module("l2s_pack.nodes.capture")
    spatial = importlib.import_module("l2s_pack.nodes.spatial_prompt")

    tiny = build_tiny_models(family, 0)
    text = "a photo of a dog to the left of a cat"
    tokens = tiny.clip.tokenize(text, tokenizer_options=spatial.tokenizer_options_for(tiny.clip, 512))
    spec = spatial.build_spatial_spec(tiny.clip, text, tokens)
    positive = node_helpers.conditioning_set_values(tiny.clip.encode_from_tokens_scheduled(tokens),
                                                    {spatial.SPEC_KEY: spec})
    negative = tiny.clip.encode_from_tokens_scheduled(tiny.clip.tokenize(""))
    if family == "flux":
        positive = node_helpers.conditioning_set_values(positive, {"guidance": 3.5})
    channels = 16 if family in ("sd3", "flux") else 4
    latent = torch.zeros(1, channels, side // 8, side // 8)
    result: dict[str, Any] = {}

    def probe(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
              callback: Any = None, disable: Any = None) -> torch.Tensor:
        guider = model.inner_model
        base = guider.inner_model
        pos = guider.conds["positive"]
        layout, patch = steering.model_layout(base)
        text_length = int(pos[0]["cross_attn"].shape[1])
        capture = capture_mod.AttentionCapture()
        options = steering.capture_options(extra_args["model_options"], capture)
        sigma = sigmas[0].expand(x.shape[0])

        def run(subject: tuple[int, ...], obj: tuple[int, ...]) -> tuple[list[Any], list[Any]]:
            capture.begin(capture_mod.MapRequest(layout, text_length, subject, obj, (x.shape[-2], x.shape[-1]),
                                                     patch))
            comfy.samplers.calc_cond_batch(base, [pos], x, sigma, options)
            return capture.end()

        everything = tuple(range(text_length))
        all_subject, _ = run(everything, everything)
        positions = spec.positions[0]
        subject, obj = run(positions.subject, positions.object)
        maps = layout_mod.classifier_input(subject, obj, layout, 16)  # (1, 2, C, 16, 16)
        result.update({
            "layout": layout,
            "text_length": text_length,
            "positions": [list(positions.subject), list(positions.object)],
            "layers": [{"grid": list(layer.grid), "heads": layer.heads,
                        "mean_over_all_tokens_min": float(layer.maps.min()),
                        "mean_over_all_tokens_max": float(layer.maps.max())} for layer in all_subject],
            "channels": int(maps.shape[2]),
            "map_sums": maps.sum(dim=(-1, -2)).flatten().tolist(),
            "raw_layer_sums": [float(layer.maps.sum(dim=(-1, -2)).mean()) for layer in subject],
        })
        return x

    sigmas = comfy.samplers.calculate_sigmas(tiny.model.get_model_object("model_sampling"), "simple", 2)
    comfy.sample.sample_custom(tiny.model, torch.randn_like(latent), 1.0, comfy.samplers.KSAMPLER(probe), sigmas,
                               positive, negative, latent, seed=0)
    print("L2S_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
