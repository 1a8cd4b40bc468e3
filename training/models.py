"""Loading a local diffusers pipeline for data creation, and telling which model family it is.

This module owns the boundary between a user's ``--model`` / ``--config`` / ``--family`` / ``--device`` /
``--dtype`` and a ready diffusers pipeline:

* models come **only from local paths**: a diffusers folder (with ``model_index.json``), or a single checkpoint file
  together with ``--config DIR``, a local diffusers folder of the same model. SD/SDXL single files hold the whole
  pipeline (``--config`` supplies configs and tokenizers); FLUX/SD3 single files are taken as the transformer alone,
  and the other components (VAE, text encoders, with weights) come from ``--config``. Everything is
  loaded with ``local_files_only=True``; a hub id such as ``runwayml/stable-diffusion-v1-5`` is refused with an
  error that says downloads are not done;
* the pipeline class decides the denoiser kind (``"sd"``, ``"sdxl"``: UNet; ``"flux"``, ``"sd3"``: joint attention);
* the family (:mod:`l2s_core.families`) is detected from the class and config where possible (SD with
  cross_attention_dim 768 -> ``sd14``, 1024 -> ``sd2``; SDXL -> ``sdxl``; FLUX with guidance_embeds -> ``flux_dev``,
  without -> ``flux_schnell``; SD3 -> ``sd3``), or given with ``--family`` and checked against the pipeline's layout.

The VAE always runs in float32 (SD-family VAEs overflow in fp16); the other components use the requested dtype.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2s_core.families import JOINT, UNET, ModelFamily, get_family

logger = logging.getLogger(__name__)

SD = "sd"
SDXL = "sdxl"
FLUX = "flux"
SD3 = "sd3"

#: diffusers pipeline class name (``_class_name`` in model_index.json) -> denoiser kind.
PIPELINE_KINDS: dict[str, str] = {
    "StableDiffusionPipeline": SD,
    "StableDiffusionImg2ImgPipeline": SD,
    "StableDiffusionXLPipeline": SDXL,
    "StableDiffusionXLImg2ImgPipeline": SDXL,
    "FluxPipeline": FLUX,
    "FluxImg2ImgPipeline": FLUX,
    "StableDiffusion3Pipeline": SD3,
    "StableDiffusion3Img2ImgPipeline": SD3,
}

#: denoiser kind -> the diffusers pipeline class used to load it.
_LOAD_CLASS: dict[str, str] = {
    SD: "StableDiffusionPipeline",
    SDXL: "StableDiffusionXLPipeline",
    FLUX: "FluxPipeline",
    SD3: "StableDiffusion3Pipeline",
}

_TRANSFORMER_CLASS: dict[str, str] = {FLUX: "FluxTransformer2DModel", SD3: "SD3Transformer2DModel"}

KIND_LAYOUT: dict[str, str] = {SD: UNET, SDXL: UNET, FLUX: JOINT, SD3: JOINT}

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelLoadError(ValueError):
    """The model could not be found or loaded from the given local path(s)."""


@dataclass(frozen=True)
class LoadedModel:
    """A loaded pipeline and what the data creation needs to know about it.

    Attributes:
        pipe: The diffusers pipeline (components on ``device``; VAE in float32).
        kind: ``"sd"``, ``"sdxl"``, ``"flux"`` or ``"sd3"``.
        family: The model family (official constants: layout, channels, steps, resolution).
        name: Basename of the model path, recorded in meta.json.
        device: Where the components live.
        dtype: dtype of the denoiser and text encoders.
    """

    pipe: Any
    kind: str
    family: ModelFamily
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def layout(self) -> str:
        """``"unet"`` or ``"joint"``."""
        return KIND_LAYOUT[self.kind]

    @property
    def denoiser(self) -> torch.nn.Module:
        """The UNet or the transformer."""
        return self.pipe.unet if self.layout == UNET else self.pipe.transformer


def parse_dtype(name: str, device: torch.device, kind: str | None = None) -> torch.dtype:
    """Resolve ``--dtype``: a dtype name, or ``"auto"`` (float32 on CPU and for UNets, bfloat16 for FLUX/SD3 on GPU).

    Raises:
        ValueError: an unknown name.
    """
    key = name.strip().lower()
    if key == "auto":
        if device.type == "cpu" or kind in (SD, SDXL, None):
            return torch.float32
        return torch.bfloat16
    if key not in DTYPES:
        raise ValueError(f"--dtype: unknown dtype {name!r}; expected one of auto, {', '.join(DTYPES)}.")
    return DTYPES[key]


def parse_device(name: str | None) -> torch.device:
    """Resolve ``--device`` (None: CUDA when available, else CPU).

    Raises:
        ValueError: the name is not a torch device, or CUDA was asked for but is not available.
    """
    if name is None or name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device: {name!r} is not a torch device ({exc}); use e.g. cpu, cuda or cuda:1.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device: {name!r} was requested but CUDA is not available here; use --device cpu.")
    return device


def _read_class_name(folder: Path, option: str) -> str:
    """Return ``_class_name`` from ``folder/model_index.json``, with errors naming the option and the file."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(
            f"{option}: {folder} is a folder but has no model_index.json, so it is not a diffusers pipeline folder. "
            "Pass the folder that holds model_index.json (the one `save_pretrained` / `huggingface-cli download` "
            "created), or a single checkpoint file with --config pointing at such a folder."
        )
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{option}: cannot read {index}: {exc}.") from exc
    name = data.get("_class_name") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise ModelLoadError(f"{option}: {index} has no '_class_name' string; it is not a diffusers model index.")
    return name


def _kind_for_class(class_name: str, source: Path) -> str:
    if class_name not in PIPELINE_KINDS:
        supported = ", ".join(sorted(PIPELINE_KINDS))
        raise ModelLoadError(
            f"{source}: pipeline class {class_name!r} is not supported for inversion. Supported: {supported} "
            "(SD1.x/SD2.x, SDXL, FLUX.1, SD3)."
        )
    return PIPELINE_KINDS[class_name]


def resolve_model_paths(model: str, config: str | None) -> tuple[Path, Path | None, str]:
    """Check ``--model`` and ``--config`` and return (model path, config folder or None, pipeline class name).

    Raises:
        ModelLoadError: the path does not exist (a hub id gets its own message: downloads are not done), a folder is
            not a diffusers folder, a single file comes without ``--config``, or ``--config`` is not a local
            diffusers folder.
    """
    path = Path(model).expanduser()
    if not path.exists():
        if _HUB_ID.match(model) and not model.startswith((".", "~")):
            raise ModelLoadError(
                f"--model: {model!r} is not a local folder or file. It looks like a Hugging Face hub id, but "
                "`invert` never downloads models. Download it first (e.g. `huggingface-cli download "
                f"{model} --local-dir models/{model.split('/')[-1]}`) and pass that folder with --model."
            )
        raise ModelLoadError(
            f"--model: no such folder or file: {path}. Give the local diffusers folder (with model_index.json) or "
            "a single checkpoint file plus --config."
        )
    if path.is_dir():
        if config is not None:
            logger.warning("--config %s is ignored: --model %s is a diffusers folder.", config, path)
        return path, None, _read_class_name(path, "--model")
    if config is None:
        raise ModelLoadError(
            f"--config: --model {path} is a single file, so --config must name a local diffusers folder with the "
            "pipeline's component configs (model_index.json, scheduler/, text encoders, ...) for the same model."
        )
    config_path = Path(config).expanduser()
    if not config_path.is_dir():
        if _HUB_ID.match(config) and not config_path.exists():
            raise ModelLoadError(
                f"--config: {config!r} is not a local folder; hub ids are not accepted because `invert` never "
                "downloads. Download the diffusers config folder and pass its path."
            )
        raise ModelLoadError(f"--config: no such folder: {config_path}. It must be a local diffusers folder.")
    return path, config_path, _read_class_name(config_path, "--config")


def detect_family(kind: str, pipe: Any, requested: str | None) -> ModelFamily:
    """Pick the model family from ``--family`` or from the pipeline.

    Args:
        kind: Denoiser kind from the pipeline class.
        pipe: The loaded pipeline (its UNet/transformer config is read).
        requested: ``--family`` as given, or None to detect.

    Returns:
        The family.

    Raises:
        ValueError: an unknown ``--family``, a family whose layout does not fit the pipeline, or a pipeline whose
            family cannot be detected (the message asks for ``--family``).
    """
    if requested is not None:
        try:
            family = get_family(requested)
        except ValueError as exc:
            raise ValueError(f"--family: {exc}") from exc
        if family.layout != KIND_LAYOUT[kind]:
            raise ValueError(
                f"--family: {family.name} ({family.display}) uses the {family.layout!r} attention layout, but the "
                f"model is a {_LOAD_CLASS[kind]} ({KIND_LAYOUT[kind]!r} layout). Pick a family of that pipeline."
            )
        return family
    if kind == SD:
        dim = int(pipe.unet.config.cross_attention_dim)
        if dim == 768:
            return get_family("sd14")
        if dim == 1024:
            return get_family("sd2")
        raise ValueError(
            f"--family: cannot tell the family of this StableDiffusionPipeline (cross_attention_dim {dim}; SD1.x "
            "has 768, SD2.x 1024). Pass --family explicitly, e.g. --family sd14."
        )
    if kind == SDXL:
        return get_family("sdxl")
    if kind == SD3:
        return get_family("sd3")
    assert kind == FLUX
    return get_family("flux_dev" if bool(pipe.transformer.config.guidance_embeds) else "flux_schnell")


def load_model(
    model: str,
    *,
    config: str | None = None,
    family: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
) -> LoadedModel:
    """Load a local diffusers pipeline for inversion (never downloads).

    Args:
        model: ``--model``: a diffusers folder or a single checkpoint file.
        config: ``--config``: the local diffusers folder with the component configs, for a single file.
        family: ``--family`` or None to detect.
        device: ``--device`` (None/"auto": CUDA when available).
        dtype: ``--dtype`` name or ``"auto"``.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: see :func:`resolve_model_paths`, or diffusers failed to load the files (the message keeps
            diffusers' reason).
        ValueError: bad ``--family``, ``--device`` or ``--dtype``.
    """
    toy = _load_toy_world(model, family, device)
    if toy is not None:
        return toy
    path, config_path, class_name = resolve_model_paths(model, config)
    kind = _kind_for_class(class_name, config_path or path)
    torch_device = parse_device(device)
    torch_dtype = parse_dtype(dtype, torch_device, kind)
    if family is not None:
        try:  # before the slow load, so a typo fails fast
            get_family(family)
        except ValueError as exc:
            raise ValueError(f"--family: {exc}") from exc
    import diffusers  # heavy import, only when a model is really loaded

    pipeline_cls = getattr(diffusers, _LOAD_CLASS[kind])
    extra: dict[str, Any] = {}
    if kind == SD:
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    try:
        if config_path is None:
            pipe = pipeline_cls.from_pretrained(str(path), dtype=torch_dtype, local_files_only=True, **extra)
        elif kind in (FLUX, SD3):
            # FLUX/SD3 single files are usually the transformer alone (as ComfyUI uses them): load it from the file
            # and every other component (VAE, text encoders) from the --config folder.
            transformer_cls = getattr(diffusers, _TRANSFORMER_CLASS[kind])
            transformer = transformer_cls.from_single_file(
                str(path), config=str(config_path), subfolder="transformer", dtype=torch_dtype, local_files_only=True
            )
            pipe = pipeline_cls.from_pretrained(
                str(config_path), transformer=transformer, dtype=torch_dtype, local_files_only=True
            )
        else:
            pipe = pipeline_cls.from_single_file(
                str(path), config=str(config_path), dtype=torch_dtype, local_files_only=True, **extra
            )
    except Exception as exc:  # boundary: diffusers raises many types; keep its reason and name our inputs
        where = f"--model {path}" + (f" with --config {config_path}" if config_path is not None else "")
        raise ModelLoadError(
            f"Could not load {where} as a local {_LOAD_CLASS[kind]} (no downloads are attempted): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    pipe.to(torch_device)
    if pipe.vae.dtype != torch.float32:
        pipe.vae.to(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    fam = detect_family(kind, pipe, family)
    logger.info(
        "Loaded %s from %s as %s (%s) on %s, %s.",
        _LOAD_CLASS[kind],
        path,
        fam.name,
        fam.display,
        torch_device,
        torch_dtype,
    )
    return LoadedModel(pipe=pipe, kind=kind, family=fam, name=path.name, device=torch_device, dtype=torch_dtype)


def _load_toy_world(model: str, family: str | None, device: str | None) -> LoadedModel | None:
    """Load a toy-world bundle (a ``.safetensors`` file with toy-world metadata) as an SD pipeline, else None.

    The toy world is always float32 and of family ``toy``.

    Raises:
        ValueError: ``--family`` names another family.
    """
    path = Path(model).expanduser()
    if not (path.is_file() and path.suffix == ".safetensors"):
        return None
    from l2s_core.toy_bundle import BundleError, load_bundle, read_bundle_metadata

    try:
        read_bundle_metadata(path)
    except BundleError:
        return None
    if family is not None and get_family(family).name != "toy":
        raise ValueError(f"--family: {path} is a toy-world bundle (family 'toy'), not {family!r}.")
    from .toy.bundle import load_pipeline

    torch_device = parse_device(device)
    pipe = load_pipeline(load_bundle(path), torch_device)
    logger.info("Loaded the toy world %s on %s.", path, torch_device)
    return LoadedModel(pipe=pipe, kind=SD, family=get_family("toy"), name=path.stem, device=torch_device,
                       dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------------------
# Driving the components: VAE, text encoders and denoiser calls per pipeline kind.


@dataclass(frozen=True)
class Conditioning:
    """One prompt's encoder outputs, ready for denoiser calls.

    Attributes:
        prompt: The prompt text.
        embeds: Text embeddings the denoiser attends to, ``(1, T, D)``.
        text_length: ``T``, the length of the attention maps' text axis.
        extra: Other denoiser inputs (pooled embeddings, SDXL time ids, FLUX text ids / guidance).
    """

    prompt: str
    embeds: torch.Tensor
    text_length: int
    extra: dict[str, Any]


class PipelineAdapter:
    """The few pipeline operations inversion needs, the same for every kind.

    Args:
        model: The loaded model.
        resolution: Square image side in pixels.
        max_sequence_length: T5 tokens (FLUX, SD3); ignored for UNets.
        guidance: FLUX guidance-embedding value (models with ``guidance_embeds``); ignored otherwise.

    Raises:
        ValueError: the resolution does not fit the model's latent/patch grid.
    """

    def __init__(self, model: LoadedModel, resolution: int, max_sequence_length: int, guidance: float) -> None:
        self.model = model
        self.pipe = model.pipe
        self.kind = model.kind
        self.resolution = int(resolution)
        self.max_sequence_length = int(max_sequence_length)
        self.guidance = float(guidance)
        vae_config = self.pipe.vae.config
        vae_blocks = getattr(vae_config, "block_out_channels", None) or vae_config.encoder_block_out_channels
        vae_scale = 2 ** (len(vae_blocks) - 1)  # AutoencoderKL and AutoencoderTiny (TAESD) both down-sample 8x
        self.vae_scale = vae_scale
        if self.kind in (SD, SDXL):
            multiple = vae_scale * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        elif self.kind == FLUX:
            multiple = vae_scale * 2
        else:
            multiple = vae_scale * int(self.pipe.transformer.config.patch_size)
        if self.resolution <= 0 or self.resolution % multiple != 0:
            raise ValueError(
                f"--resolution: {resolution} px does not fit {model.name} ({_LOAD_CLASS[self.kind]}): it must be a "
                f"positive multiple of {multiple} (VAE factor {vae_scale} x the denoiser's down-sampling/patching)."
            )
        self.latent_hw = (self.resolution // vae_scale, self.resolution // vae_scale)

    # -- geometry -----------------------------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        """Side of the latent patches that make one image token: 2 for FLUX, the config's for SD3, 1 for UNets."""
        if self.kind == FLUX:
            return 2
        if self.kind == SD3:
            return int(self.pipe.transformer.config.patch_size)
        return 1

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """Image-token grid ``(h, w)`` of a joint-attention model, None for UNets."""
        if self.kind not in (FLUX, SD3):
            return None
        h, w = self.latent_hw
        return h // self.patch_size, w // self.patch_size

    # -- VAE ----------------------------------------------------------------------------------------------------

    def _vae_shift_scale(self) -> tuple[float, float]:
        config = self.pipe.vae.config
        shift = getattr(config, "shift_factor", None)
        shift = 0.0 if (shift is None or self.kind in (SD, SDXL)) else float(shift)
        return shift, float(config.scaling_factor)

    def encode_image(self, image01: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE latent of an image in [0, 1], ``(1, 3, R, R)`` -> ``(1, c, h, w)`` float32, scaled (and shifted).

        ``generator`` None takes the posterior mean (deterministic); a generator samples the posterior.
        """
        vae = self.pipe.vae
        encoded = vae.encode(image01.to(self.model.device, torch.float32) * 2.0 - 1.0)
        if hasattr(encoded, "latent_dist"):
            dist = encoded.latent_dist
            latent = dist.mean if generator is None else dist.sample(generator=generator)
        else:  # AutoencoderTiny (TAESD): a deterministic encoder
            latent = encoded.latents
        shift, scale = self._vae_shift_scale()
        return ((latent - shift) * scale).float()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a scaled latent ``(1, c, h, w)`` to an image in [0, 1], ``(1, 3, R, R)`` float32."""
        shift, scale = self._vae_shift_scale()
        image = self.pipe.vae.decode(latent.float() / scale + shift, return_dict=False)[0]
        return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    # -- text ---------------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> Conditioning:
        """Encode one prompt (batch 1, no classifier-free guidance)."""
        pipe, device = self.pipe, self.model.device
        extra: dict[str, Any] = {}
        if self.kind == SD:
            embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
        elif self.kind == SDXL:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            projection_dim = (
                int(pipe.text_encoder_2.config.projection_dim)
                if pipe.text_encoder_2 is not None
                else int(pooled.shape[-1])
            )
            size = (self.resolution, self.resolution)
            time_ids = pipe._get_add_time_ids(
                size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=projection_dim
            )
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.to(device)}
        elif self.kind == FLUX:
            embeds, pooled, text_ids = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                device=device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
            extra.update(pooled_projections=pooled, txt_ids=text_ids)
            if bool(pipe.transformer.config.guidance_embeds):
                extra["guidance"] = torch.full([1], self.guidance, device=device, dtype=torch.float32)
            else:
                extra["guidance"] = None
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
            )
            extra["pooled_projections"] = pooled
        embeds = embeds.to(device=device, dtype=self.model.dtype)
        return Conditioning(prompt=prompt, embeds=embeds, text_length=int(embeds.shape[1]), extra=extra)

    def token_positions(self, prompt: str, span: tuple[int, int]) -> list[int]:
        """Positions of ``prompt[span]``'s tokens on the attention's text axis.

        UNets and SD3: the CLIP tokenizer (start token at position 0, window 77; SD3's text axis opens with the CLIP
        chunk). FLUX: the T5 tokenizer (no start token, window = max_sequence_length).
        """
        from l2s_core.tokens import phrase_token_positions

        if self.kind == FLUX:
            tok = self.pipe.tokenizer_2
            offset, max_length = 0, self.max_sequence_length
            ignorable: set[int] = set()
            space_id = tok.convert_tokens_to_ids("▁")
            if isinstance(space_id, int) and space_id != tok.unk_token_id:
                ignorable.add(space_id)
        else:
            tok = self.pipe.tokenizer
            offset, max_length = 1, int(tok.model_max_length)
            ignorable = set()

        def encode(text: str) -> list[int]:
            return list(tok(text, add_special_tokens=False).input_ids)

        return phrase_token_positions(
            encode, prompt, span, offset=offset, max_length=max_length, ignorable_leading_ids=ignorable
        )

    # -- denoiser -----------------------------------------------------------------------------------------------

    def denoise(self, latent: torch.Tensor, timestep: float, cond: Conditioning) -> torch.Tensor:
        """One denoiser call (batch 1) at a model timestep; returns the raw model output.

        UNets take the ``(1, c, h, w)`` latent and the integer DDPM timestep; FLUX takes the packed latent
        ``(1, h/2 * w/2, 4c)`` and ``timestep / 1000`` (= sigma), SD3 the ``(1, c, h, w)`` latent and ``sigma * 1000``.
        """
        device, dtype = self.model.device, self.model.dtype
        x = latent.to(device=device, dtype=dtype)
        if self.kind in (SD, SDXL):
            t = torch.tensor(int(timestep), device=device)
            return self.pipe.unet(x, t, encoder_hidden_states=cond.embeds, return_dict=False, **cond.extra)[0]
        if self.kind == FLUX:
            h, w = self.latent_hw
            img_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)
            t = torch.full([1], float(timestep) / 1000.0, device=device, dtype=dtype)
            return self.pipe.transformer(
                hidden_states=x,
                timestep=t,
                guidance=cond.extra["guidance"],
                pooled_projections=cond.extra["pooled_projections"],
                encoder_hidden_states=cond.embeds,
                txt_ids=cond.extra["txt_ids"],
                img_ids=img_ids,
                return_dict=False,
            )[0]
        t = torch.full([1], float(timestep), device=device, dtype=dtype)
        return self.pipe.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.extra["pooled_projections"],
            return_dict=False,
        )[0]

    def pack(self, latent: torch.Tensor) -> torch.Tensor:
        """FLUX: ``(1, c, h, w)`` -> packed ``(1, h/2 * w/2, 4c)``; other kinds unchanged."""
        if self.kind != FLUX:
            return latent
        _, c, h, w = latent.shape
        return self.pipe._pack_latents(latent, 1, c, h, w)  # (1, h/2*w/2, 4c)
