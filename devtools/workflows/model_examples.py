"""The examples for full-size models: SD1.5, SD2.1, SDXL, SD3, FLUX.1-schnell/dev, on vs off, SamplerCustomAdvanced.

Each shows the published recipe of its family (resolution, steps, CFG, sampler) and the classifier to load; the
prompt is the same everywhere, and the seed is the official run's. The loaders carry their files' download links
(:mod:`.model_files`) for ComfyUI's missing-models dialog.

Layout, at the canvas zoom the graphs open at (0.8), within the 1940 x 1210 graph units a 1920 x 1080 screen shows
clear of the minimap's corner: loaders (x 0) | prompts (x 340) | classifier and sampler (x 780) | image, decode and
Attention Preview (x 1160); the note under the first two columns.
"""

from __future__ import annotations

from typing import Any

from devtools.workflows.graph import NEGATIVE_COLOUR, POSITIVE_COLOUR, STEER_COLOUR, Out, Workflow
from devtools.workflows.model_files import model_files
from devtools.workflows.notes import (
    STEER_DEFAULTS,
    note_markdown,
    official_classifier_lines,
    trained_classifier_lines,
)

PROMPT = "a photo of a dog to the right of a teddy bear"
SEED = 42  # the official run.py seeds everything with 42


def steering_widgets(steered_steps: int, step_size: float = 5.0) -> dict[str, Any]:
    """The steering widgets of an example: official mode, with the custom numbers at the official values."""
    return {"mode": "official", "last_steered_step": steered_steps, "step_size": step_size, "iterations": 16,
            "early_stop_probability": 1.0}


def _steer_inputs(model: Out, classifier: Out, positive: Out, negative: Out, latent: Out, steps: int, cfg: float,
                  sampler: str, scheduler: str, step_size: float = 5.0, steered_steps: int | None = None
                  ) -> dict[str, Any]:
    return {"model": model, "classifier": classifier, "positive": positive, "negative": negative,
            "latent_image": latent, "seed": SEED, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "denoise": 1.0,
            **steering_widgets((steps + 1) // 2 if steered_steps is None else steered_steps, step_size)}


BOTTOM = 1180
"""The lowest graph y the opening view shows on a 1920 x 1080 screen."""
LOADER_WIDTH = 320
PROMPT_X, PROMPT_SIZE = 340, (420, 330)
SAMPLER_X = 780
CLASSIFIER_SIZE = (360, 220)
STEER_SIZE = (360, 700)
"""Learned Spatial Steer: its widgets, and a report panel for about 20 lines of the trace (it scrolls beyond)."""
RESULTS_X = 1160
SAVE_SIZE = (420, 440)
"""Save Image: a 512 px image shown about 400 px wide."""
PREVIEW_Y, PREVIEW_WIDTH = 490, 750
"""Attention Preview, below Save Image; it ends left of the minimap (bottom right of the screen)."""


def _note_box(top: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Position and size of the note: under the loaders and prompts, from ``top`` to the bottom of the view."""
    return (0, top), (PROMPT_X + PROMPT_SIZE[0], BOTTOM - top)


def _classifier(w: Workflow, file: str, pos: tuple[float, float] = (SAMPLER_X, 0),
                width: float = CLASSIFIER_SIZE[0]) -> int:
    return w.add("L2S_LoadRelationClassifier", pos, {"classifier_name": file, "family": "auto"},
                 size=(width, CLASSIFIER_SIZE[1]), colour=STEER_COLOUR)


def _outputs(w: Workflow, latent: Out, vae: Out, trace: Out, decode_y: float = 0) -> None:
    """Save Image with VAE Decode beside it, and Attention Preview over the decoded image below them."""
    decode = w.add("VAEDecode", (RESULTS_X + SAVE_SIZE[0] + 20, decode_y), {"samples": latent, "vae": vae},
                   size=(210, 46))
    w.add("SaveImage", (RESULTS_X, 0), {"images": Out(decode, 0), "filename_prefix": f"l2s/{w.name}"},
          size=SAVE_SIZE)
    w.add("L2S_AttentionPreview", (RESULTS_X, PREVIEW_Y), {"trace": trace, "image": Out(decode, 0),
                                                           "steps": "first and last steered step"},
          size=(PREVIEW_WIDTH, BOTTOM - PREVIEW_Y))


def checkpoint_workflow(name: str, file_name: str, *, title: str, model: str, ckpt: str, ckpt_source: str,
                        classifier: str, classifier_lines: list[str], side: int, steps: int, cfg: float, sampler: str,
                        scheduler: str, latent_class: str, settings_lines: list[str], settings: str,
                        step_size: float = 5.0) -> Workflow:
    """SD1.x / SD2.x / SDXL / SD3 from one checkpoint file: the all-in-one Learned Spatial Steer node."""
    w = Workflow(name, file_name, title, model, settings, ("Load Checkpoint", "Spatial Prompt Encode",
                                                           "Learned Spatial Steer", "VAE Decode",
                                                           "Save Image + Attention Preview"))
    ckpt_node = w.add("CheckpointLoaderSimple", (0, 0), {"ckpt_name": ckpt}, size=(LOADER_WIDTH, 98),
                      models=model_files(ckpt))
    latent = w.add(latent_class, (0, 148), {"width": side, "height": side, "batch_size": 1},
                   size=(LOADER_WIDTH, 106))
    pos = w.add("L2S_SpatialPromptEncode", (PROMPT_X, 0), {"clip": Out(ckpt_node, 1), "text": PROMPT},
                title="Spatial Prompt Encode (positive)", size=PROMPT_SIZE, colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (PROMPT_X, 380), {"clip": Out(ckpt_node, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(PROMPT_SIZE[0], 100), colour=NEGATIVE_COLOUR)
    clf = _classifier(w, classifier)
    steer = w.add("L2S_LearnedSpatialSteer", (SAMPLER_X, 270),
                  _steer_inputs(Out(ckpt_node, 0), Out(clf, 0), Out(pos, 0), Out(neg, 0), Out(latent, 0), steps, cfg,
                                sampler, scheduler, step_size), size=STEER_SIZE, colour=STEER_COLOUR)
    _outputs(w, Out(steer, 0), Out(ckpt_node, 2), Out(steer, 1))
    w.note(note_markdown(title, f"{model} with Learned Spatial Steer: the first denoising steps are steered until the "
                         "relation classifier reads the requested relation from the model's own attention; then the "
                         "sampler finishes as usual.", [f"`checkpoints/{ckpt}`: {ckpt_source}"], classifier_lines,
                         settings_lines), *_note_box(540))
    return w


FLUX_TEXT_ENCODERS = [
    "`text_encoders/clip_l.safetensors` and `text_encoders/t5xxl_fp16.safetensors`: "
    "[comfyanonymous/flux_text_encoders](https://huggingface.co/comfyanonymous/flux_text_encoders)",
    "`vae/ae.safetensors`: the FLUX.1 autoencoder (in the black-forest-labs FLUX.1 repositories on Hugging Face, or "
    "[Comfy-Org/Lumina_Image_2.0_Repackaged](https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged), "
    "`split_files/vae`)",
]


def _flux_loaders(w: Workflow, unet: str) -> tuple[int, int, int]:
    model = w.add("UNETLoader", (0, 0), {"unet_name": unet, "weight_dtype": "default"}, size=(LOADER_WIDTH, 82),
                  models=model_files(unet))
    clip = w.add("DualCLIPLoader", (0, 132), {"clip_name1": "clip_l.safetensors",
                                              "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
                                              "device": "default"}, size=(LOADER_WIDTH, 130),
                 models=model_files("clip_l.safetensors", "t5xxl_fp16.safetensors"))
    vae = w.add("VAELoader", (0, 312), {"vae_name": "ae.safetensors"}, size=(LOADER_WIDTH, 58),
                models=model_files("ae.safetensors"))
    return model, clip, vae


def flux_workflow(name: str, file_name: str, *, title: str, model: str, unet: str, unet_source: str,
                  classifier: str, side: int, steps: int, guidance: float | None, settings_lines: list[str],
                  settings: str) -> Workflow:
    """FLUX.1 (schnell / dev) from split files: the all-in-one Learned Spatial Steer node."""
    encode = "Spatial Prompt Encode (T5 512)" + (" + Flux Guidance 3.5" if guidance is not None else "")
    chain = ("Load Diffusion Model + DualCLIP + VAE", encode, "Learned Spatial Steer", "VAE Decode",
             "Save Image + Attention Preview")
    w = Workflow(name, file_name, title, model, settings, chain)
    unet_node, clip, vae = _flux_loaders(w, unet)
    latent = w.add("EmptySD3LatentImage", (0, 420), {"width": side, "height": side, "batch_size": 1},
                   size=(LOADER_WIDTH, 106))
    pos = w.add("L2S_SpatialPromptEncode", (PROMPT_X, 0), {"clip": Out(clip, 0), "text": PROMPT, "t5_length": 512},
                title="Spatial Prompt Encode (positive)", size=PROMPT_SIZE, colour=POSITIVE_COLOUR)
    positive, model_out = Out(pos, 0), Out(unet_node, 0)
    neg = w.add("ConditioningZeroOut", (PROMPT_X, 380), {"conditioning": Out(pos, 0)},
                title="Negative (unused at CFG 1)", size=(PROMPT_SIZE[0], 26), colour=NEGATIVE_COLOUR)
    if guidance is not None:
        guided = w.add("FluxGuidance", (PROMPT_X, 456), {"conditioning": positive, "guidance": guidance},
                       size=(PROMPT_SIZE[0], 58))
        positive = Out(guided, 0)
        sampling = w.add("ModelSamplingFlux", (PROMPT_X, 564), {"model": model_out, "max_shift": 1.15,
                                                                "base_shift": 0.5, "width": side, "height": side},
                         size=(PROMPT_SIZE[0], 130))
        model_out = Out(sampling, 0)
    clf = _classifier(w, classifier)
    steer = w.add("L2S_LearnedSpatialSteer", (SAMPLER_X, 270),
                  _steer_inputs(model_out, Out(clf, 0), positive, Out(neg, 0), Out(latent, 0), steps, 1.0, "euler",
                                "simple", steered_steps=1 if guidance is None else None), size=STEER_SIZE,
                  colour=STEER_COLOUR)
    _outputs(w, Out(steer, 0), Out(vae, 0), Out(steer, 1))
    w.note(note_markdown(title, f"{model} with Learned Spatial Steer: the first denoising steps are steered until the "
                         "relation classifier reads the requested relation from the model's own attention; then the "
                         "sampler finishes as usual.", [f"`diffusion_models/{unet}`: {unet_source}",
                                                        *FLUX_TEXT_ENCODERS],
                         official_classifier_lines(classifier, model), settings_lines),
           *_note_box(750 if guidance is not None else 580))
    return w


SD15_SOURCE = ("Stable Diffusion 1.5 ([Comfy-Org/stable-diffusion-v1-5-archive]"
               "(https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive)); SD 1.4 works the same way")
SD21_SOURCE = ("Stable Diffusion 2.1-base, 512 px ([stabilityai/stable-diffusion-2-1-base]"
               "(https://huggingface.co/stabilityai/stable-diffusion-2-1-base))")
SD_SETTINGS = "512x512, 50 steps, CFG 7.5, sampler `ddim` + scheduler `ddim_uniform` (closest to the official DDIM, eta 0)"


def workflow_sd15() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd15", "2. SD1.5 with the official classifier", title="Learn-to-Steer: SD1.5", model="Stable Diffusion 1.5",
        ckpt="v1-5-pruned-emaonly.safetensors", ckpt_source=SD15_SOURCE, classifier="sd14.pth", step_size=7.5,
        classifier_lines=official_classifier_lines("sd14.pth", "Stable Diffusion 1.4 (same architecture as 1.5)"),
        side=512, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=[f"Official SD1.4 run: {SD_SETTINGS}.",
                        "Official steering: steps 0-24 of 50, step size 7.5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | CFG 7.5 | DDIM")


def workflow_sd21() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd21", "3. SD2.1 with the official classifier", title="Learn-to-Steer: SD2.1", model="Stable Diffusion 2.1-base",
        ckpt="v2-1_512-ema-pruned.safetensors", ckpt_source=SD21_SOURCE, classifier="sd2.pth",
        classifier_lines=official_classifier_lines("sd2.pth", "Stable Diffusion 2.1-base"),
        side=512, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=[f"Official SD2.1 run: {SD_SETTINGS}.",
                        "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | CFG 7.5 | DDIM")


def workflow_sdxl() -> Workflow:
    return checkpoint_workflow(
        "l2s_sdxl", "4. SDXL (train your own classifier)", title="Learn-to-Steer: SDXL", model="SDXL 1.0 base",
        ckpt="sd_xl_base_1.0.safetensors",
        ckpt_source=("SDXL 1.0 base ([stabilityai/stable-diffusion-xl-base-1.0]"
                     "(https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0))"),
        classifier="sdxl_l2s.safetensors", classifier_lines=trained_classifier_lines("sdxl_l2s.safetensors", "SDXL"),
        side=1024, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=["1024x1024, 50 steps, CFG 7.5, `ddim` + `ddim_uniform`: the SD recipe the official "
                        "classifiers were trained and run with; match the step count your classifier was trained on.",
                        STEER_DEFAULTS],
        settings="1024x1024 | 50 steps | CFG 7.5 | DDIM")


def workflow_sd3() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd3", "5. SD3 Medium (train your own classifier)", title="Learn-to-Steer: SD3", model="Stable Diffusion 3 Medium",
        ckpt="sd3_medium_incl_clips_t5xxlfp16.safetensors",
        ckpt_source=("SD3 Medium with its text encoders in one file ([stabilityai/stable-diffusion-3-medium]"
                     "(https://huggingface.co/stabilityai/stable-diffusion-3-medium), gated: accept the licence "
                     "first)"),
        classifier="sd3_l2s.safetensors", classifier_lines=trained_classifier_lines("sd3_l2s.safetensors", "SD3"),
        side=1024, steps=28, cfg=4.5, sampler="euler", scheduler="sgm_uniform", latent_class="EmptySD3LatentImage",
        settings_lines=["1024x1024, 28 steps, CFG 4.5, `euler` + `sgm_uniform` (the usual SD3 Medium settings).",
                        STEER_DEFAULTS],
        settings="1024x1024 | 28 steps | CFG 4.5 | euler")


def workflow_flux_schnell() -> Workflow:
    return flux_workflow(
        "l2s_flux_schnell", "6. FLUX.1-schnell with the official classifier",
        title="Learn-to-Steer: FLUX.1-schnell", model="FLUX.1-schnell",
        unet="flux1-schnell.safetensors",
        unet_source=("[black-forest-labs/FLUX.1-schnell](https://huggingface.co/black-forest-labs/FLUX.1-schnell) or "
                     "[Comfy-Org/flux1-schnell](https://huggingface.co/Comfy-Org/flux1-schnell)"),
        classifier="flux_schnell.pth", side=256, steps=4, guidance=None,
        settings_lines=["Official FLUX.1-schnell run: **256x256** (the classifier's 16x16 maps at 16 px per cell), "
                        "4 steps, no guidance (CFG 1.0), `euler` + `simple`; Spatial Prompt Encode pads T5 to 512 "
                        "tokens as the classifier saw.",
                        "Official steering: only step 0, step size 5, 16 iterations. " + STEER_DEFAULTS],
        settings="256x256 | 4 steps | CFG 1.0 | euler")


def workflow_flux_dev() -> Workflow:
    return flux_workflow(
        "l2s_flux_dev", "7. FLUX.1-dev with the official classifier", title="Learn-to-Steer: FLUX.1-dev", model="FLUX.1-dev",
        unet="flux1-dev.safetensors",
        unet_source=("[black-forest-labs/FLUX.1-dev](https://huggingface.co/black-forest-labs/FLUX.1-dev) (gated, "
                     "non-commercial licence) or [Comfy-Org/flux1-dev](https://huggingface.co/Comfy-Org/flux1-dev)"),
        classifier="flux_dev.pth", side=512, steps=50, guidance=3.5,
        settings_lines=["Official FLUX.1-dev run: **512x512**, 50 steps, Flux Guidance 3.5, CFG 1.0, `euler` + "
                        "`simple`; Spatial Prompt Encode pads T5 to 512 tokens.",
                        "ModelSamplingFlux with the image size gives the resolution-dependent shift the official "
                        "(diffusers) scheduler uses; change its width/height with the latent's.",
                        "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | guidance 3.5 | euler")


def workflow_compare_on_off() -> Workflow:
    """SD2.1, one seed through the stock KSampler and through Learned Spatial Steer, stitched side by side."""
    w = Workflow("l2s_compare_on_off", "8. SD2.1, steering on vs off (same seed)", "Learn-to-Steer: on vs off",
                 "Stable Diffusion 2.1-base", "same seed | KSampler vs Learned Spatial Steer",
                 ("Spatial Prompt Encode", "KSampler | Learned Spatial Steer", "VAE Decode x2", "Image Stitch",
                  "Save Image + Attention Preview"))
    ckpt_file = "v2-1_512-ema-pruned.safetensors"
    ckpt = w.add("CheckpointLoaderSimple", (0, 0), {"ckpt_name": ckpt_file}, size=(LOADER_WIDTH, 98),
                 models=model_files(ckpt_file))
    clf = _classifier(w, "sd2.pth", (0, 148), LOADER_WIDTH)
    latent = w.add("EmptyLatentImage", (0, 418), {"width": 512, "height": 512, "batch_size": 1},
                   size=(LOADER_WIDTH, 106))
    pos = w.add("L2S_SpatialPromptEncode", (PROMPT_X, 0), {"clip": Out(ckpt, 1), "text": PROMPT},
                title="Spatial Prompt Encode (positive)", size=PROMPT_SIZE, colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (PROMPT_X, 380), {"clip": Out(ckpt, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(PROMPT_SIZE[0], 100), colour=NEGATIVE_COLOUR)
    plain = w.add("KSampler", (SAMPLER_X, 0), {"model": Out(ckpt, 0), "positive": Out(pos, 0),
                                               "negative": Out(neg, 0), "latent_image": Out(latent, 0), "seed": SEED,
                                               "steps": 50, "cfg": 7.5, "sampler_name": "ddim",
                                               "scheduler": "ddim_uniform", "denoise": 1.0},
                  title="KSampler (steering off)", size=(STEER_SIZE[0], 262))
    steer = w.add("L2S_LearnedSpatialSteer", (SAMPLER_X, 312),
                  _steer_inputs(Out(ckpt, 0), Out(clf, 0), Out(pos, 0), Out(neg, 0), Out(latent, 0), 50, 7.5, "ddim",
                                "ddim_uniform"), title="Learned Spatial Steer (steering on)",
                  size=(STEER_SIZE[0], 640), colour=STEER_COLOUR)
    decode_plain = w.add("VAEDecode", (PROMPT_X, 530), {"samples": Out(plain, 0), "vae": Out(ckpt, 2)},
                         title="VAE Decode (off)", size=(200, 46))
    decode_steer = w.add("VAEDecode", (PROMPT_X + 220, 530), {"samples": Out(steer, 0), "vae": Out(ckpt, 2)},
                         title="VAE Decode (on)", size=(200, 46))
    stitch = w.add("ImageStitch", (PROMPT_X, 626), {"image1": Out(decode_plain, 0), "image2": Out(decode_steer, 0),
                                                    "direction": "right", "match_image_size": True,
                                                    "spacing_width": 16, "spacing_color": "white"}, size=(210, 150))
    w.add("SaveImage", (RESULTS_X, 0), {"images": Out(stitch, 0), "filename_prefix": f"l2s/{w.name}"},
          size=(PREVIEW_WIDTH, SAVE_SIZE[1]))
    w.add("L2S_AttentionPreview", (RESULTS_X, PREVIEW_Y), {"trace": Out(steer, 1), "image": Out(decode_steer, 0),
                                                           "steps": "first and last steered step"},
          size=(PREVIEW_WIDTH, BOTTOM - PREVIEW_Y))
    w.note(note_markdown("Learn-to-Steer: steering on vs off", "The same prompt, conditioning and seed go through the "
                         "stock KSampler (left image) and through Learned Spatial Steer (right image); Image Stitch "
                         "puts them side by side. The only difference is the steering of the first steps.",
                         [f"`checkpoints/{ckpt_file}`: {SD21_SOURCE}"],
                         official_classifier_lines("sd2.pth", "Stable Diffusion 2.1-base"),
                         [f"{SD_SETTINGS}, seed {SEED} in both samplers (keep them equal when you change it).",
                          "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. "
                          + STEER_DEFAULTS]), *_note_box(830))
    return w


def workflow_sampler_custom() -> Workflow:
    """FLUX.1-dev with SamplerCustomAdvanced: the SAMPLER variant wraps KSamplerSelect's sampler."""
    w = Workflow("l2s_sampler_custom", "9. FLUX.1-dev with SamplerCustomAdvanced",
                 "Learn-to-Steer: SamplerCustomAdvanced", "FLUX.1-dev", "512x512 | 50 steps | guidance 3.5 | euler",
                 ("KSamplerSelect", "Learned Spatial Steer (SAMPLER)", "SamplerCustomAdvanced", "VAE Decode",
                  "Save Image + Attention Preview"))
    unet, clip, vae = _flux_loaders(w, "flux1-dev.safetensors")
    latent = w.add("EmptySD3LatentImage", (0, 420), {"width": 512, "height": 512, "batch_size": 1},
                   size=(LOADER_WIDTH, 106))
    sampling = w.add("ModelSamplingFlux", (PROMPT_X, 0), {"model": Out(unet, 0), "max_shift": 1.15,
                                                          "base_shift": 0.5, "width": 512, "height": 512},
                     size=(PROMPT_SIZE[0], 130))
    pos = w.add("L2S_SpatialPromptEncode", (PROMPT_X, 180), {"clip": Out(clip, 0), "text": PROMPT, "t5_length": 512},
                title="Spatial Prompt Encode (positive)", size=PROMPT_SIZE, colour=POSITIVE_COLOUR)
    guided = w.add("FluxGuidance", (PROMPT_X, 560), {"conditioning": Out(pos, 0), "guidance": 3.5},
                   size=(PROMPT_SIZE[0], 58))
    clf = _classifier(w, "flux_dev.pth")
    select = w.add("KSamplerSelect", (SAMPLER_X, 270), {"sampler_name": "euler"}, size=(STEER_SIZE[0], 58))
    steer = w.add("L2S_LearnedSpatialSteerSampler", (SAMPLER_X, 378),
                  {"classifier": Out(clf, 0), "sampler": Out(select, 0), **steering_widgets(25)},
                  size=(STEER_SIZE[0], 110), colour=STEER_COLOUR)
    noise = w.add("RandomNoise", (SAMPLER_X, 640), {"noise_seed": SEED}, size=(STEER_SIZE[0], 82))
    guider = w.add("BasicGuider", (SAMPLER_X, 772), {"model": Out(sampling, 0), "conditioning": Out(guided, 0)},
                   size=(STEER_SIZE[0], 46))
    sigmas = w.add("BasicScheduler", (SAMPLER_X, 868), {"model": Out(sampling, 0), "scheduler": "simple",
                                                        "steps": 50, "denoise": 1.0}, size=(STEER_SIZE[0], 106))
    sampler = w.add("SamplerCustomAdvanced", (RESULTS_X + SAVE_SIZE[0] + 20, 0),
                    {"noise": Out(noise, 0), "guider": Out(guider, 0), "sampler": Out(steer, 0),
                     "sigmas": Out(sigmas, 0), "latent_image": Out(latent, 0)}, size=(230, 110))
    _outputs(w, Out(sampler, 0), Out(vae, 0), Out(steer, 1), decode_y=160)
    w.note(note_markdown("Learn-to-Steer with SamplerCustomAdvanced", "Learned Spatial Steer (SAMPLER) wraps the "
                         "sampler from KSamplerSelect, so any guider, scheduler and noise source works. The positive "
                         "conditioning must come from Spatial Prompt Encode. The SAMPLER node runs before sampling, "
                         "so it has nothing to report; Attention Preview takes the decoded image, runs after "
                         "sampling and shows the classifier's probability per steered step.",
                         ["`diffusion_models/flux1-dev.safetensors`: [black-forest-labs/FLUX.1-dev]"
                          "(https://huggingface.co/black-forest-labs/FLUX.1-dev) (gated, non-commercial licence) or "
                          "[Comfy-Org/flux1-dev](https://huggingface.co/Comfy-Org/flux1-dev)", *FLUX_TEXT_ENCODERS],
                         official_classifier_lines("flux_dev.pth", "FLUX.1-dev"),
                         ["Official FLUX.1-dev run: 512x512, 50 steps (BasicScheduler `simple`), Flux Guidance 3.5 "
                          "with BasicGuider (no CFG), `euler`; T5 padded to 512 tokens; ModelSamplingFlux at the "
                          "image size.",
                          "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. "
                          + STEER_DEFAULTS]), *_note_box(670))
    return w
