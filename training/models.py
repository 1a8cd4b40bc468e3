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
Driving the loaded components (VAE, text encoders, denoiser calls) is :mod:`.pipeline_adapter`.
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
LOAD_CLASS: dict[str, str] = {
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
                f"model is a {LOAD_CLASS[kind]} ({KIND_LAYOUT[kind]!r} layout). Pick a family of that pipeline."
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

    pipeline_cls = getattr(diffusers, LOAD_CLASS[kind])
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
            f"Could not load {where} as a local {LOAD_CLASS[kind]} (no downloads are attempted): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    pipe.to(torch_device)
    if pipe.vae.dtype != torch.float32:
        pipe.vae.to(dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    fam = detect_family(kind, pipe, family)
    logger.info(
        "Loaded %s from %s as %s (%s) on %s, %s.",
        LOAD_CLASS[kind],
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
