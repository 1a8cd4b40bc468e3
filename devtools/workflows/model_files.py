"""The base-model files the examples load, with direct download links for ComfyUI's missing-models dialog.

The frontend (1.27) reads ``properties.models`` of each loader node when a workflow opens; for each listed file
that the server does not have in ``directory``, its "Missing Models" dialog offers a download into that folder. It
downloads only from huggingface.co (or civitai.com) and only ``.safetensors`` / ``.sft`` files, so the relation
classifiers (the authors' ``.pth`` files on Google Drive, or ones you train) are named in the notes instead.

The links are the ones ComfyUI's own templates use where they use the same file (``comfyui_workflow_templates``
0.1.95), else the file in the model's official Hugging Face repository.
"""

from __future__ import annotations

from devtools.workflows.graph import ModelFile

MODEL_FILES: dict[str, ModelFile] = {m.name: m for m in (
    ModelFile("v1-5-pruned-emaonly.safetensors",
              "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
              "v1-5-pruned-emaonly.safetensors", "checkpoints"),
    ModelFile("v2-1_512-ema-pruned.safetensors",
              "https://huggingface.co/stabilityai/stable-diffusion-2-1-base/resolve/main/"
              "v2-1_512-ema-pruned.safetensors", "checkpoints"),
    ModelFile("sd_xl_base_1.0.safetensors",
              "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/"
              "sd_xl_base_1.0.safetensors", "checkpoints"),
    ModelFile("sd3_medium_incl_clips_t5xxlfp16.safetensors",
              "https://huggingface.co/stabilityai/stable-diffusion-3-medium/resolve/main/"
              "sd3_medium_incl_clips_t5xxlfp16.safetensors", "checkpoints"),
    ModelFile("flux1-schnell.safetensors",
              "https://huggingface.co/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors",
              "diffusion_models"),
    ModelFile("flux1-dev.safetensors",
              "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    ModelFile("clip_l.safetensors",
              "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
              "text_encoders"),
    ModelFile("t5xxl_fp16.safetensors",
              "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
              "text_encoders"),
    ModelFile("ae.safetensors",
              "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/"
              "ae.safetensors", "vae"),
)}
"""Every base-model file of the examples, by file name."""


def model_files(*names: str) -> tuple[ModelFile, ...]:
    """The entries for ``names`` (a loader node's files), in order.

    Raises:
        KeyError: a file has no entry (add its link here).
    """
    missing = [n for n in names if n not in MODEL_FILES]
    if missing:
        raise KeyError(f"no download link for {missing}: add them to MODEL_FILES")
    return tuple(MODEL_FILES[n] for n in names)
