"""Run under ComfyUI's Python: weighted prompts through ComfyUI's real tokenizers and the pack's token lookup.

Invoked by tests/core/test_emphasis_tokens.py in a separate process. Usage:

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/comfy_checks/emphasis_check.py PROMPTS.json

PROMPTS.json holds ``{"pairs": [[weighted, plain], ...], "fuzz": [prompt, ...]}``. For each tokenizer family (SD1,
SD2, SDXL, SD3, FLUX; ComfyUI's bundled tokenizer files, no model weights) and each pair, the pack's
``build_spatial_spec`` runs on both prompts; the result lists the positions, the token ids and emphasis weights
ComfyUI put at those positions, and the ids of each phrase tokenized alone. For every fuzz prompt it lists
ComfyUI's ``token_weights`` segments next to :func:`l2s_core.emphasis.emphasis_segments`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any

from check_support import load_pack  # noqa: E402  (this folder is on sys.path)


class TokenizerOnlyClip:
    """The two things ``build_spatial_spec`` uses of a ``comfy.sd.CLIP``: ``tokenizer`` and ``tokenize``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, Any]:
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)


def tokenizers() -> dict[str, Any]:
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.text_encoders.flux
    import comfy.text_encoders.sd2_clip
    import comfy.text_encoders.sd3_clip

    return {
        "sd1": comfy.sd1_clip.SD1Tokenizer(),
        "sd2": comfy.text_encoders.sd2_clip.SD2Tokenizer(),
        "sdxl": comfy.sdxl_clip.SDXLTokenizer(),
        "sd3": comfy.text_encoders.sd3_clip.SD3Tokenizer(),
        "flux": comfy.text_encoders.flux.FluxTokenizer(),
    }


def flat(chunks: list[list[Any]]) -> list[tuple[int, float]]:
    return [(int(t[0]), float(t[1])) for chunk in chunks for t in chunk]


def spec_result(spatial: Any, clip: Any, prompt: str) -> dict[str, Any]:
    tokens = clip.tokenize(prompt, tokenizer_options=spatial.tokenizer_options_for(clip, 512))
    try:
        spec = spatial.build_spatial_spec(clip, prompt, tokens)
    except ValueError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    axis = flat(tokens[spec.encoder])
    sub = spatial._sub_tokenizer(clip, spec.encoder)
    out = []
    for triplet, positions in zip(spec.triplets, spec.positions, strict=True):
        entry: dict[str, Any] = {"subject": triplet.subject, "relation": triplet.relation, "object": triplet.object,
                                 "spans": [list(triplet.subject_span), list(triplet.relation_span),
                                           list(triplet.object_span)]}
        for role, phrase, where in (("subject", triplet.subject, positions.subject),
                                    ("object", triplet.object, positions.object)):
            entry[f"{role}_positions"] = list(where)
            entry[f"{role}_ids"] = [axis[p][0] for p in where]
            entry[f"{role}_weights"] = [axis[p][1] for p in where]
            alone = spatial._content(sub.tokenize_with_weights(phrase), sub)[0]
            entry[f"{role}_alone_ids"] = alone
        out.append(entry)
    return {"encoder": spec.encoder, "text_length": spec.text_length, "triplets": out}


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        data = json.load(fh)
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    from comfy.cli_args import args

    args.cpu = True
    import comfy.sd1_clip

    load_pack()
    spatial = importlib.import_module("l2s_pack.nodes.spatial_prompt")
    emphasis = importlib.import_module("l2s_pack.l2s_core.emphasis")

    result: dict[str, Any] = {"families": {}, "fuzz": []}
    for family, tokenizer in tokenizers().items():
        clip = TokenizerOnlyClip(tokenizer)
        result["families"][family] = [
            {"weighted": spec_result(spatial, clip, weighted), "plain": spec_result(spatial, clip, plain)}
            for weighted, plain in data["pairs"]
        ]
    for prompt in data["fuzz"]:
        comfy_segments = [
            [comfy.sd1_clip.unescape_important(text), weight]
            for text, weight in comfy.sd1_clip.token_weights(comfy.sd1_clip.escape_important(prompt), 1.0)
        ]
        ours = [[s.text, s.weight] for s in emphasis.emphasis_segments(prompt)]
        result["fuzz"].append({"prompt": prompt, "comfy": [s for s in comfy_segments if s[0]], "ours": ours})
    print("L2S_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
