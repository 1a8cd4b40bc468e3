"""Spatial Prompt Encode: CLIP Text Encode that also records the prompt's relations and object tokens."""

from __future__ import annotations

import node_helpers
from comfy_api.latest import io

from ..l2s_core.relations import SPATIAL_RELATIONS
from .reports import ParsedRelation, relations_report
from .spatial_prompt import FLUX_T5_LENGTH, SPEC_KEY, SpatialSpec, build_spatial_spec, tokenizer_options_for
from .types import CATEGORY

PARSE = "parse from text"


class SpatialPromptEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_SpatialPromptEncode",
            display_name="Spatial Prompt Encode",
            category=CATEGORY,
            description="Encodes a prompt exactly like CLIP Text Encode, and records which relation it asks for "
            "('a dog to the right of a teddy bear') and where the two objects' tokens are, for the Learned "
            "Spatial Steer nodes. Any node that takes CONDITIONING can use the output.",
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder (from your checkpoint or CLIP loader)."),
                io.String.Input(
                    "text", multiline=True, dynamic_prompts=True,
                    tooltip="The prompt. It must name a relation: above, below, to the left of, to the right of "
                    "(or synonyms such as 'left of', 'on top of', 'under'). Weights work as in CLIP Text Encode, "
                    "also on the objects and the relation: 'a (dog:1.3) (left of:1.2) a cat'.",
                ),
                io.Combo.Input(
                    "relation", options=[PARSE, *SPATIAL_RELATIONS], default=PARSE, optional=True,
                    tooltip="'parse from text' finds the relations in the prompt. Pick a relation to override the "
                    "parser; then also give the subject and object phrases.",
                ),
                io.String.Input(
                    "subject", default="", optional=True,
                    tooltip="With an explicit relation: the phrase of the object that should be placed, as written "
                    "in the prompt (e.g. 'dog').",
                ),
                io.String.Input(
                    "object", default="", optional=True,
                    tooltip="With an explicit relation: the reference object's phrase, as written in the prompt "
                    "(e.g. 'teddy bear').",
                ),
                io.Int.Input(
                    "t5_length", default=FLUX_T5_LENGTH, min=0, max=4096, optional=True,
                    tooltip="FLUX only (shown when the CLIP is FLUX's T5): pad T5 to this many tokens. The official "
                    "FLUX classifiers saw 512; ComfyUI's default is 256. 0 keeps ComfyUI's default.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    tooltip="The encoded prompt, carrying the parsed relations for the steering nodes."
                )
            ],
            is_output_node=True,  # its report is re-sent when a run finds it cached (web/learn_to_steer.js shows it)
        )

    @classmethod
    def execute(cls, clip: io.Clip.Type, text: str, relation: str = PARSE, subject: str = "", object: str = "",
                t5_length: int = FLUX_T5_LENGTH) -> io.NodeOutput:
        if clip is None:
            raise RuntimeError(
                "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint "
                "does not contain a valid clip or text encoder model."
            )
        explicit = None
        if relation != PARSE:
            if not subject.strip() or not object.strip():
                raise ValueError(
                    f"The relation is set to {relation!r}, so the subject and object phrases are needed too (as they "
                    "appear in the prompt). Set relation to 'parse from text' to let the parser find them."
                )
            explicit = (subject.strip(), relation, object.strip())
        tokens = clip.tokenize(text, tokenizer_options=tokenizer_options_for(clip, t5_length))
        try:
            spec = build_spatial_spec(clip, text, tokens, explicit)
        except ValueError as exc:
            # The parser's own exception classes live in this pack, whose module name ComfyUI derives from its
            # folder path; the UI shows that name as the error type. A plain ValueError shows as "ValueError".
            raise ValueError(str(exc)) from exc
        conditioning = clip.encode_from_tokens_scheduled(tokens)
        conditioning = node_helpers.conditioning_set_values(conditioning, {SPEC_KEY: spec})
        return io.NodeOutput(conditioning, ui=relations_report(parsed_relations(spec), spec.encoder == "t5xxl"))


def parsed_relations(spec: SpatialSpec) -> list[ParsedRelation]:
    """The spec's relations with their token positions, for the node's report."""
    return [ParsedRelation(t.subject, t.relation, t.object, tuple(p.subject), tuple(p.object))
            for t, p in zip(spec.triplets, spec.positions, strict=True)]
