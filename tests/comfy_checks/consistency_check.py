"""Run under ComfyUI's Python: record maps with training/ (diffusers) and capture them with the nodes (ComfyUI).

Invoked by tests/comfyui/test_maps_consistency.py in a separate process (ComfyUI must not share the test process: its
top-level ``nodes`` module would clash with this pack's ``nodes`` package). Usage:

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/comfy_checks/consistency_check.py FAMILY

For FAMILY ``sd1`` or ``flux`` it builds the tiny random-weight ComfyUI model of the integration-test pack
(tests/comfy_test_pack), builds the equivalent diffusers model (UNet2DConditionModel / FluxTransformer2DModel) and
copies the weights over with ComfyUI's own key maps (``comfy.utils.unet_to_diffusers`` / ``flux_to_diffusers``).
Then, for a few latent sizes, it checks

* the conversion: both denoisers give the same output for the same latent, timestep and text context;
* the maps: ``training.recorder.AttentionRecorder`` (diffusers processors) and the pack's
  ``nodes.capture.AttentionCapture`` (installed with ``nodes.steering.capture_options``, called through ComfyUI's
  attention override) give the same classifier input ``(2, C, 16, 16)`` for the same forward.

It prints one ``L2S_RESULT {json}`` line with the measured differences; the pytest side applies the tolerances. When
diffusers is not importable in ComfyUI's environment the JSON holds only a ``skip`` reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from check_support import load_pack, relative  # noqa: E402  (this folder is on sys.path)

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
MAP_SIZE = 16
SUBJECT = (2,)
OBJECT = (5, 6)
SEED = 0


def _layers_diff(comfy_layers: list[Any], diffusers_layers: list[Any]) -> tuple[bool, float]:
    """Same (grid, heads) per layer in call order, and the max abs difference of the raw per-layer maps."""
    same = [(x.grid, x.heads) for x in comfy_layers] == [(x.grid, x.heads) for x in diffusers_layers]
    if not same:
        return False, float("inf")
    return True, max(float((a.maps - b.maps).abs().max()) for a, b in zip(comfy_layers, diffusers_layers,
                                                                          strict=True))


def _copy_weights(target: Any, source_sd: dict[str, Any], key_map: dict[str, Any], slice_length: Any) -> None:
    """Fill ``target`` (a diffusers model) from a ComfyUI state dict through a ComfyUI diffusers->ldm key map.

    ``key_map`` values are a ComfyUI key, ``(key, (dim, start, length))`` (a slice of a fused ComfyUI weight) or
    ``(key, None, fn)`` (a converted weight; ComfyUI's functions here, such as ``swap_scale_shift``, are their own
    inverse). ``slice_length(diffusers_key, length)`` may correct a slice length. Every diffusers parameter must be
    filled and every ComfyUI weight used.
    """
    wanted = target.state_dict()
    filled: dict[str, Any] = {}
    used: set[str] = set()
    for dkey, entry in key_map.items():
        if dkey not in wanted:
            continue
        if isinstance(entry, str):
            ckey, value = entry, source_sd.get(entry)
        elif entry[1] is not None:
            ckey = entry[0]
            dim, start, length = entry[1]
            value = source_sd.get(ckey)
            if value is not None:
                length = slice_length(dkey, length)
                if start + length > value.shape[dim]:
                    raise RuntimeError(f"{dkey}: slice {start}+{length} beyond {ckey} {tuple(value.shape)}")
                value = value.narrow(dim, start, length)
        else:
            ckey = entry[0]
            value = source_sd.get(ckey)
            if value is not None:
                value = entry[2](value)
        if value is None:
            continue
        if tuple(value.shape) != tuple(wanted[dkey].shape):
            raise RuntimeError(f"{dkey}: ComfyUI gives {tuple(value.shape)} from {ckey}, diffusers wants "
                               f"{tuple(wanted[dkey].shape)}")
        filled[dkey] = value.detach().clone()
        used.add(ckey)
    missing = sorted(set(wanted) - set(filled))
    unused = sorted(set(source_sd) - used)
    if missing or unused:
        raise RuntimeError(f"weight conversion incomplete: diffusers keys not filled {missing[:8]} ({len(missing)}), "
                           f"ComfyUI keys not used {unused[:8]} ({len(unused)})")
    target.load_state_dict(filled, strict=True)


# -- SD1.x (UNet) --------------------------------------------------------------------------------------------------


def diffusers_unet(unet_config: dict[str, Any]) -> Any:
    """The diffusers UNet2DConditionModel with the block structure of a ComfyUI SD1-style unet_config."""
    from diffusers import UNet2DConditionModel

    if unet_config.get("num_head_channels", -1) != -1 or unet_config.get("adm_in_channels") is not None:
        raise ValueError("only SD1-style configs (fixed head count, no ADM input) are converted here")
    mult = list(unet_config["channel_mult"])
    res = list(unet_config["num_res_blocks"])
    if len(set(res)) != 1:
        raise ValueError(f"diffusers needs one layers_per_block, got num_res_blocks {res}")
    depth_in = list(unet_config["transformer_depth"])
    depth_out = list(unet_config["transformer_depth_output"])
    levels = len(mult)
    attention_in = [depth_in[level * res[0]] > 0 for level in range(levels)]
    # transformer_depth_output lists the output blocks from the highest resolution; diffusers' up blocks start low.
    attention_out = [depth_out[level * (res[0] + 1)] > 0 for level in range(levels)][::-1]
    if any(d not in (0, 1) for d in depth_in + depth_out) or unet_config.get("transformer_depth_middle", 1) != 1:
        raise ValueError("only transformer depth 0/1 (SD1.x) is converted here")
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=unet_config["in_channels"],
        out_channels=unet_config["out_channels"],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_in),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attention_out),
        block_out_channels=tuple(unet_config["model_channels"] * m for m in mult),
        layers_per_block=res[0],
        cross_attention_dim=unet_config["context_dim"],
        attention_head_dim=unet_config["num_heads"],  # diffusers' legacy name for the SD1 head count
        use_linear_projection=bool(unet_config["use_linear_in_transformer"]),
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        transformer_layers_per_block=1,
    )


def check_sd1(torch: Any, tiny: Any, pack: dict[str, Any]) -> dict[str, Any]:
    """Conversion and map agreement for the tiny SD1 UNet at two latent sizes (one square, one odd, non-square)."""
    import comfy.utils

    from l2s_core.attention import MapRequest
    from training.recorder import AttentionRecorder

    base = tiny.model.model
    diffusion_model = base.diffusion_model
    unet_config = base.model_config.unet_config
    unet = diffusers_unet(unet_config).float().eval()
    _copy_weights(unet, diffusion_model.state_dict(), comfy.utils.unet_to_diffusers(unet_config),
                  lambda key, length: length)
    layout, patch = pack["steering"].model_layout(base)
    recorder = AttentionRecorder(unet, "sd")
    text_length = 77
    gen = torch.Generator().manual_seed(SEED)
    cases = []
    for latent_size, timestep in (((16, 16), 500.0), ((12, 20), 801.0)):
        x = torch.randn(1, 4, *latent_size, generator=gen)  # (1, 4, H, W)
        context = torch.randn(1, text_length, unet_config["context_dim"], generator=gen)  # (1, 77, 64)
        t = torch.tensor([timestep])
        with torch.no_grad():
            comfy_out = diffusion_model(x, t, context=context, transformer_options={})
            diffusers_out = unet(x, t, encoder_hidden_states=context).sample

            capture = pack["capture"].AttentionCapture()
            options = pack["steering"].capture_options({"transformer_options": {}}, capture)
            capture.begin(pack["capture"].MapRequest(layout, text_length, SUBJECT, OBJECT, latent_size, patch))
            diffusion_model(x, t, context=context, transformer_options=options["transformer_options"])
            comfy_subject, comfy_object = capture.end()
            comfy_maps = pack["layout"].classifier_input(comfy_subject, comfy_object, layout, MAP_SIZE)[0]

            with recorder.installed():
                with recorder.recording(MapRequest(layout, text_length, SUBJECT, OBJECT, latent_size)):
                    unet(x, t, encoder_hidden_states=context)
                diffusers_maps = recorder.classifier_maps(MAP_SIZE)  # (2, C, S, S)
                diffusers_subject, diffusers_object = recorder.layers()
        cases.append(_case(latent_size, comfy_out, diffusers_out, comfy_maps, diffusers_maps,
                           comfy_subject + comfy_object, diffusers_subject + diffusers_object))
    return {"layout": layout, "cases": cases}


# -- FLUX.1 --------------------------------------------------------------------------------------------------------


def diffusers_flux(config: dict[str, Any], mlp_hidden: int) -> Any:
    """The diffusers FluxTransformer2DModel of a ComfyUI Flux unet_config.

    diffusers' constructor has no ``mlp_ratio`` (it builds MLPs 4x the width); the tiny model's MLPs are
    ``mlp_hidden`` wide, so the MLP linears of every block are rebuilt with that width (their activations, order and
    the block code are diffusers' own).
    """
    from diffusers import FluxTransformer2DModel
    from torch import nn

    hidden, heads = config["hidden_size"], config["num_heads"]
    if config.get("theta", 10000) != 10000:
        raise ValueError("diffusers' FluxTransformer2DModel fixes RoPE theta at 10000")
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=config["in_channels"] * config["patch_size"] ** 2,
        out_channels=config["out_channels"] * config["patch_size"] ** 2,
        num_layers=config["depth"],
        num_single_layers=config["depth_single_blocks"],
        attention_head_dim=hidden // heads,
        num_attention_heads=heads,
        joint_attention_dim=config["context_in_dim"],
        pooled_projection_dim=config["vec_in_dim"],
        guidance_embeds=bool(config["guidance_embed"]),
        axes_dims_rope=tuple(config["axes_dim"]),
    )
    for block in model.transformer_blocks:
        for ff in (block.ff, block.ff_context):
            ff.net[0].proj = nn.Linear(hidden, mlp_hidden)
            ff.net[2] = nn.Linear(mlp_hidden, hidden)
    for block in model.single_transformer_blocks:
        block.mlp_hidden_dim = mlp_hidden
        block.proj_mlp = nn.Linear(hidden, mlp_hidden)
        block.proj_out = nn.Linear(hidden + mlp_hidden, hidden)
    return model


def pack_latent(x: Any) -> Any:
    """(B, C, H, W) -> (B, (H/2)(W/2), C*4), diffusers' FluxPipeline._pack_latents."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2)  # (B, C, h, 2, w, 2)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, h, w, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)  # (B, h*w, C*4)


def unpack_latent(x: Any, height: int, width: int) -> Any:
    """(B, (H/2)(W/2), C*4) -> (B, C, H, W), diffusers' FluxPipeline._unpack_latents."""
    b, _, packed = x.shape
    x = x.view(b, height // 2, width // 2, packed // 4, 2, 2)  # (B, h, w, C, 2, 2)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, h, 2, w, 2)
    return x.reshape(b, packed // 4, height, width)  # (B, C, H, W)


def image_ids(torch: Any, h: int, w: int) -> Any:
    """(h*w, 3) position ids [0, row, col], diffusers' FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)  # (h*w, 3)


def check_flux(torch: Any, tiny: Any, pack: dict[str, Any]) -> dict[str, Any]:
    """Conversion and map agreement for the tiny FLUX at its native 16x16 token grid and at a non-square one."""
    import comfy.utils

    from l2s_core.attention import MapRequest
    from training.recorder import AttentionRecorder

    base = tiny.model.model
    diffusion_model = base.diffusion_model
    config = base.model_config.unet_config
    hidden = config["hidden_size"]
    mlp_hidden = diffusion_model.single_blocks[0].linear1.weight.shape[0] - 3 * hidden
    if diffusion_model.double_blocks[0].img_mlp[0].weight.shape[0] != mlp_hidden:
        raise RuntimeError("double and single blocks disagree about the MLP width")
    transformer = diffusers_flux(config, mlp_hidden).float().eval()

    def slice_length(key: str, length: int) -> int:
        # flux_to_diffusers slices proj_mlp out of linear1 as hidden*4 rows (mlp_ratio 4); the tiny model's is smaller.
        return mlp_hidden if key.endswith(".proj_mlp.weight") or key.endswith(".proj_mlp.bias") else length

    _copy_weights(transformer, diffusion_model.state_dict(), comfy.utils.flux_to_diffusers(config, output_prefix=""),
                  slice_length)
    layout, patch = pack["steering"].model_layout(base)
    recorder = AttentionRecorder(transformer, "flux")
    text_length = 256  # ComfyUI's FLUX T5 padding
    gen = torch.Generator().manual_seed(SEED)
    cases = []
    for latent_size, sigma in (((32, 32), 0.7), ((24, 40), 0.35)):
        height, width = latent_size
        grid = (height // patch, width // patch)
        x = torch.randn(1, config["in_channels"], height, width, generator=gen)  # (1, 16, H, W)
        context = torch.randn(1, text_length, config["context_in_dim"], generator=gen)  # (1, T, 32)
        pooled = torch.randn(1, config["vec_in_dim"], generator=gen)  # (1, 64)
        timestep = torch.tensor([sigma])
        guidance = torch.tensor([3.5])
        diffusers_kwargs = {
            "hidden_states": pack_latent(x),
            "encoder_hidden_states": context,
            "pooled_projections": pooled,
            "timestep": timestep,
            "img_ids": image_ids(torch, *grid),
            "txt_ids": torch.zeros(text_length, 3),
            "guidance": guidance,
        }
        with torch.no_grad():
            comfy_out = diffusion_model(x, timestep, context, y=pooled, guidance=guidance, transformer_options={})
            diffusers_out = unpack_latent(transformer(**diffusers_kwargs).sample, height, width)

            capture = pack["capture"].AttentionCapture()
            options = pack["steering"].capture_options({"transformer_options": {}}, capture)
            capture.begin(pack["capture"].MapRequest(layout, text_length, SUBJECT, OBJECT, latent_size, patch))
            diffusion_model(x, timestep, context, y=pooled, guidance=guidance,
                            transformer_options=options["transformer_options"])
            comfy_subject, comfy_object = capture.end()
            comfy_maps = pack["layout"].classifier_input(comfy_subject, comfy_object, layout, MAP_SIZE)[0]

            with recorder.installed():
                with recorder.recording(MapRequest(layout, text_length, SUBJECT, OBJECT, latent_size, patch)):
                    transformer(**diffusers_kwargs)
                diffusers_maps = recorder.classifier_maps(MAP_SIZE)  # (2, C, S, S)
                diffusers_subject, diffusers_object = recorder.layers()
        cases.append(_case(latent_size, comfy_out, diffusers_out, comfy_maps, diffusers_maps,
                           comfy_subject + comfy_object, diffusers_subject + diffusers_object))
    return {"layout": layout, "cases": cases}


def _case(latent_size: tuple[int, int], comfy_out: Any, diffusers_out: Any, comfy_maps: Any, diffusers_maps: Any,
          comfy_layers: list[Any], diffusers_layers: list[Any]) -> dict[str, Any]:
    same_layers, raw_diff = _layers_diff(comfy_layers, diffusers_layers)
    return {
        "latent_size": list(latent_size),
        "output_max_abs_diff": float((comfy_out - diffusers_out).abs().max()),
        "output_rel_diff": relative(comfy_out, diffusers_out),
        "output_scale": float(diffusers_out.abs().max()),
        "comfy_shape": list(comfy_maps.shape),
        "diffusers_shape": list(diffusers_maps.shape),
        "same_layer_structure": same_layers,
        "layers": len(comfy_layers) // 2,
        "raw_layer_max_abs_diff": raw_diff,
        "maps_max_abs_diff": float((comfy_maps - diffusers_maps).abs().max())
        if comfy_maps.shape == diffusers_maps.shape else float("inf"),
        "maps_max": float(diffusers_maps.max()),
        # Controls: the maps are not flat, and swapping subject and object changes them far beyond the tolerance.
        "maps_spread": float(diffusers_maps.amax(dim=(-1, -2)).sub(diffusers_maps.amin(dim=(-1, -2))).min()),
        "swapped_max_abs_diff": float((comfy_maps.flip(0) - diffusers_maps).abs().max())
        if comfy_maps.shape == diffusers_maps.shape else float("inf"),
    }


def main() -> None:
    family = sys.argv[1]
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    sys.path.insert(0, str(TESTS))  # for comfy_test_pack
    sys.path.append(str(REPO))  # after ComfyUI, so `nodes` stays ComfyUI's; gives `training` and `l2s_core`
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("L2S_RESULT " + json.dumps({"skip": "diffusers is not installed in ComfyUI's Python "
                                                  f"({sys.executable}): `pip install diffusers` into ComfyUI's "
                                                  "environment to run the training/nodes map-consistency test"}))
        return
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import torch
    from comfy_test_pack.tiny_models import build_tiny_models

    load_pack()
    pack = {
        "layout": importlib.import_module("l2s_pack.l2s_core.layout"),
        "steering": importlib.import_module("l2s_pack.nodes.steering"),
        "capture": importlib.import_module("l2s_pack.nodes.capture"),
    }
    checks = {"sd1": check_sd1, "flux": check_flux}
    if family not in checks:
        raise SystemExit(f"unknown family {family!r}; expected one of {sorted(checks)}")
    tiny = build_tiny_models(family, SEED)
    result = checks[family](torch, tiny, pack)
    result["family"] = family
    print("L2S_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
