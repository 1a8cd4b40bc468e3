"""Tests for `python -m training invert`: inversion math, attention recording, the command end to end, resume, errors.

The models are tiny random-weight diffusers pipelines built offline by :mod:`diffusers_tiny` (an SD1-style UNet and a
FLUX-style transformer with the official attention layouts, so their maps have the official 128 and 1368 channels),
saved to a temporary folder once per module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers_tiny import (  # noqa: E402
    FLUX_DOUBLE_BLOCKS,
    FLUX_HEAD_DIM,
    FLUX_HEADS,
    FLUX_SINGLE_BLOCKS,
    SD1_HEADS,
    SD1_LAYERS,
    build_tiny_flux,
    build_tiny_sd,
    build_tiny_sd3,
    build_tiny_sdxl,
)
from PIL import Image, ImageDraw  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from l2s_core.attention import MapRequest, unet_layer_grid  # noqa: E402
from l2s_core.layout import classifier_input, token_average  # noqa: E402
from training import invert, triplet_folder  # noqa: E402
from training.dual_inverter import DualInverter, PromptResult, negative_relation  # noqa: E402
from training.inversion import (  # noqa: E402
    DDIMSchedule,
    ddim_invert_fixed_point,
    ddim_sample,
    psnr,
    rf_inversion_y0_weight,
    rf_inverted_latent,
    rf_reconstruction_latent,
)
from training.invert_options import default_record_steps, resolve_settings  # noqa: E402
from training.models import ModelLoadError, load_model  # noqa: E402
from training.pipeline_adapter import PipelineAdapter  # noqa: E402
from training.recorder import AttentionRecorder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RELATIONS = ["above", "below", "to the left of", "to the right of"]
SD_CHANNELS = 128  # the official SD1.x classifier's, = SD1_LAYERS x SD1_HEADS
FLUX_LAYERS = FLUX_DOUBLE_BLOCKS + FLUX_SINGLE_BLOCKS
FLUX_CHANNELS = 1368  # the official FLUX.1 classifiers', = FLUX_LAYERS x FLUX_HEADS
SD_ARGS = [
    "--family",
    "sd14",
    "--steps",
    "3",
    "--record-steps",
    "1",
    "2",
    "--resolution",
    "16",
    "--fixed-point-iterations",
    "1",
    "--psnr-threshold",
    "-100",
]
FLUX_ARGS = [
    "--resolution",
    "16",
    "--max-sequence-length",
    "16",
    "--psnr-threshold",
    "-100",
]


# --------------------------------------------------------------------------------------------------------------------
# Fixtures and helpers.


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster (and steadier on a shared CPU) with one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


def make_triplets(folder: Path, n: int = 3, relations: list[str] | None = None) -> Path:
    """A triplets folder with n synthetic images (a red square and a blue circle), relations cycling."""
    relations = relations or RELATIONS
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        img = Image.new("RGB", (40, 32), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        draw.rectangle([2 + 3 * i, 3, 12 + 3 * i, 13], fill=(220, 20, 20))
        draw.ellipse([20, 14, 32, 26], fill=(20, 20, 220))
        img.save(folder / f"img{i}.png")
        lines.append(
            {
                "id": f"item{i}",
                "image": f"img{i}.png",
                "image_id": f"im{i}",
                "subject": "red square",
                "object": "blue circle",
                "relation": relations[i % len(relations)],
                "split": "train" if i < 2 else "val",
                "source": "toy",
                "subject_box": None,
                "object_box": None,
                "image_size": [40, 32],
            }
        )
    (folder / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    mapping = {"relations": sorted(relations), "rel_name_to_idx": {r: i for i, r in enumerate(sorted(relations))}}
    (folder / "mapping.json").write_text(json.dumps(mapping), encoding="utf-8")
    summary = {"image_root": str(folder.resolve()), "seed": 0}  # as `triplets` writes it
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="invert")
    invert.add_arguments(parser)
    return parser.parse_args(argv)


def run_invert(argv: list[str]) -> int:
    return invert.run(parse(argv))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def all_tensors(out: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted((out / "shards").glob("*.safetensors")):
        for key, value in load_file(str(shard)).items():
            tensors[f"{shard.name}:{key}"] = value
    return tensors


# --------------------------------------------------------------------------------------------------------------------
# Inversion math.


def test_rf_inversion_weight_matches_method_md_for_schnell() -> None:
    w = rf_inversion_y0_weight([1.0, 0.75, 0.5, 0.25, 0.0])
    # by hand: (1 - .25/1)(1 - .25/.8)(1 - .25/.6)(1 - .25/.4) = .75 * .6875 * .58333 * .375
    assert w == pytest.approx(0.75 * 0.6875 * (1 - 0.25 / 0.6) * 0.375, abs=1e-12)
    assert w == pytest.approx(0.1128, abs=1e-4)


def test_rf_closed_form_equals_the_euler_loops_with_gamma_eta_one() -> None:
    """Algorithm 1 (gamma 1) and the eta-1 reverse loop with a random 'model velocity' give the closed form."""
    torch.manual_seed(0)
    sigmas = [1.0, 0.8, 0.55, 0.3, 0.1, 0.0]
    y0, y1 = torch.randn(2, 5), torch.randn(2, 5)
    count = len(sigmas)
    y = y0.clone()
    for k in range(count - 1):  # controlled forward ODE
        t_k = k / count
        u = torch.randn_like(y) * 3.0
        y = y + (u + 1.0 * ((y1 - y) / (1 - t_k) - u)) * (sigmas[k] - sigmas[k + 1])
    inverted = rf_inverted_latent(y0, y1, sigmas)
    torch.testing.assert_close(inverted, y, rtol=1e-5, atol=1e-5)
    x = inverted.clone()
    for i in range(count - 1):  # controlled reverse ODE, eta 1
        torch.testing.assert_close(rf_reconstruction_latent(y0, inverted, sigmas, i), x, rtol=1e-5, atol=1e-5)
        v = -torch.randn_like(x) * 3.0
        t_i = 1 - sigmas[i]
        x = x + (v + 1.0 * ((y0 - x) / (1 - t_i) - v)) * (sigmas[i] - sigmas[i + 1])
    torch.testing.assert_close(x, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rf_reconstruction_latent(y0, inverted, sigmas, count - 1), y0)


def _ddim_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_sample_matches_diffusers_ddim_step(prediction_type: str) -> None:
    torch.manual_seed(1)
    weight = torch.randn(4, 4) * 0.3

    def model(z: torch.Tensor, _step: int) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", weight, z).tanh()

    scheduler = _ddim_scheduler(prediction_type)
    schedule = DDIMSchedule.from_scheduler(scheduler, 7)
    start = torch.randn(1, 4, 3, 3)
    ours = ddim_sample(model, start, schedule)
    scheduler.set_timesteps(7)
    z = start.clone()
    for i, t in enumerate(scheduler.timesteps):
        z = scheduler.step(model(z, i), t, z, eta=0.0).prev_sample
    torch.testing.assert_close(ours, z, rtol=1e-4, atol=1e-5)


def test_fixed_point_inversion_reconstructs_better_with_more_iterations() -> None:
    torch.manual_seed(2)
    weight = torch.randn(4, 4) * 0.2
    bias = torch.randn(1, 4, 1, 1) * 0.1

    def model(z: torch.Tensor, _step: int) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", weight, z) + bias

    schedule = DDIMSchedule.from_scheduler(_ddim_scheduler(), 10)
    clean = torch.randn(1, 4, 4, 4)
    errors = []
    for iterations in (1, 5):
        inverted = ddim_invert_fixed_point(model, clean, schedule, iterations)
        errors.append((ddim_sample(model, inverted, schedule) - clean).abs().max().item())
    assert errors[1] < errors[0]
    assert errors[1] < 1e-3


def test_psnr_by_hand() -> None:
    a = torch.zeros(1, 3, 2, 2)
    b = torch.full((1, 3, 2, 2), 0.1)
    assert psnr(a, b) == pytest.approx(20.0)  # mse 0.01
    assert psnr(a, a) == math.inf


def test_default_record_steps() -> None:
    from l2s_core.families import get_family

    assert default_record_steps(get_family("sd2"), 50) == [5, 10, 15, 20, 25, 49]
    assert default_record_steps(get_family("flux_dev"), 50) == [5, 10, 15, 20, 25, 49]
    assert default_record_steps(get_family("flux_schnell"), 4) == [1, 3]
    assert default_record_steps(get_family("sd14"), 25) == [2, 5, 7, 10, 12, 24]
    assert default_record_steps(get_family("flux_schnell"), 8) == [2, 7]


def test_unet_layer_grid() -> None:
    assert unet_layer_grid(64 * 64, (64, 64)) == (64, 64)
    assert unet_layer_grid(8 * 8, (64, 64)) == (8, 8)
    assert unet_layer_grid(4 * 3, (7, 5)) == (4, 3)  # ceil halving
    with pytest.raises(ValueError, match="query tokens"):
        unet_layer_grid(10, (64, 64))


def test_negative_relation_is_seeded_wrong_and_uniform() -> None:
    item = triplet_folder.Item(1, "x", Path("x.png"), "dog", "cat", "above", "train")
    picks = [
        negative_relation(triplet_folder.Item(1, f"id{i}", Path("x"), "a", "b", "above", "t"), RELATIONS, 0)
        for i in range(300)
    ]
    assert "above" not in picks
    assert {p: picks.count(p) for p in set(picks)}.keys() == {"below", "to the left of", "to the right of"}
    assert min(picks.count(p) for p in set(picks)) > 60
    assert negative_relation(item, RELATIONS, 3) == negative_relation(item, RELATIONS, 3)


# --------------------------------------------------------------------------------------------------------------------
# Recording against diffusers' own attention.


def test_token_positions_clip_and_t5(tiny_sd: Path, tiny_flux: Path) -> None:
    prompt = "A red square above a blue circle"
    sd = PipelineAdapter(load_model(str(tiny_sd), family="sd14", device="cpu"), 16, 77, 0.0)
    assert sd.token_positions(prompt, (2, 12)) == [2, 3]  # <sot> a red square: offset 1
    assert sd.token_positions(prompt, (21, 32)) == [6, 7]
    flux = PipelineAdapter(load_model(str(tiny_flux), device="cpu"), 16, 16, 0.0)
    assert flux.token_positions(prompt, (2, 12)) == [1, 2]  # T5: no start token
    assert flux.token_positions(prompt, (21, 32)) == [5, 6]


def test_unet_recorder_matches_diffusers_attention_and_keeps_the_output(tiny_sd: Path) -> None:
    model = load_model(str(tiny_sd), family="sd14", device="cpu")
    unet = model.pipe.unet
    torch.manual_seed(0)
    latent, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    originals = dict(unet.attn_processors)
    captured: list[tuple] = []

    def hook(module, args, kwargs, _output):
        captured.append((module, args[0], kwargs["encoder_hidden_states"]))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for n, m in unet.named_modules() if n.endswith("attn2")]
    recorder = AttentionRecorder(unet, "sd")
    target = MapRequest("unet", 77, (2, 3), (6, 7), (8, 8))
    with torch.no_grad():
        expected = unet(latent, 500, encoder_hidden_states=emb).sample
        captured.clear()
        with recorder.installed(), recorder.recording(target):
            got = unet(latent, 500, encoder_hidden_states=emb).sample
    for h in handles:
        h.remove()
    assert torch.equal(got, expected)  # the original processors compute the output
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in originals.items()}
    assert SD1_LAYERS * SD1_HEADS == SD_CHANNELS
    assert recorder.num_layers == len(captured) == SD1_LAYERS and recorder.channels == SD_CHANNELS
    # 3 down levels x 2 layers, the mid block at 1x1, 3 up levels x 3 layers (call order).
    assert [layer.grid[0] for layer in recorder.subject] == [8, 8, 4, 4, 2, 2, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8]
    assert all(layer.grid[0] == layer.grid[1] and layer.maps.shape[1] == SD1_HEADS for layer in recorder.subject)
    for layer, obj_layer, (attn, hidden, enc) in zip(recorder.subject, recorder.object, captured, strict=True):
        q = attn.head_to_batch_dim(attn.to_q(hidden))
        k = attn.head_to_batch_dim(attn.to_k(enc))
        ref = attn.get_attention_scores(q, k).reshape(1, attn.heads, q.shape[1], 77)  # diffusers' explicit path
        torch.testing.assert_close(layer.maps.flatten(2), token_average(ref, [2, 3]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(obj_layer.maps.flatten(2), token_average(ref, [6, 7]), rtol=1e-5, atol=1e-6)
    maps = recorder.classifier_maps(16)
    assert maps.shape == (2, SD_CHANNELS, 16, 16)
    torch.testing.assert_close(maps, classifier_input(recorder.subject, recorder.object, "unet", 16)[0])
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, SD_CHANNELS), rtol=1e-4, atol=1e-4)


def test_flux_recorder_uses_the_models_q_and_k(tiny_flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import diffusers.models.transformers.transformer_flux as flux_module

    model = load_model(str(tiny_flux), device="cpu")
    adapter = PipelineAdapter(model, 16, 16, 0.0)
    cond = adapter.encode_prompt("A red square above a blue circle")
    torch.manual_seed(0)
    latent = adapter.pack(torch.randn(1, 1, 16, 16))  # (1, 64, 4): an 8x8 token grid
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_dispatch = flux_module.dispatch_attention_fn

    def spy(query, key, value, **kwargs):
        seen.append((query, key))
        return original_dispatch(query, key, value, **kwargs)

    recorder = AttentionRecorder(model.denoiser, "flux")
    target = MapRequest("joint", 16, (1, 2), (5, 6), (16, 16), patch_size=2)  # an 8x8 token grid
    with torch.no_grad():
        expected = adapter.denoise(latent, 750.0, cond)
        monkeypatch.setattr(flux_module, "dispatch_attention_fn", spy)
        with recorder.installed(), recorder.recording(target):
            got = adapter.denoise(latent, 750.0, cond)
    assert torch.equal(got, expected)
    assert FLUX_LAYERS * FLUX_HEADS == FLUX_CHANNELS
    assert len(seen) == recorder.num_layers == FLUX_LAYERS and recorder.channels == FLUX_CHANNELS
    for layer, (q, k) in zip(recorder.subject, seen, strict=True):  # q, k: (B, T + N, heads, D), text first
        assert q.shape == (1, 16 + 64, FLUX_HEADS, FLUX_HEAD_DIM)
        logits = q[:, 16:].transpose(1, 2) @ k[:, :16].transpose(1, 2).transpose(-1, -2) / math.sqrt(FLUX_HEAD_DIM)
        ref = torch.softmax(logits.float(), dim=-1)  # text keys only
        torch.testing.assert_close(layer.maps.flatten(2), token_average(ref, [1, 2]), rtol=1e-5, atol=1e-6)
    maps = recorder.classifier_maps(8)
    assert maps.shape == (2, FLUX_CHANNELS, 8, 8)
    raw = torch.stack(
        [torch.cat([la.maps for la in layers], dim=1)[0] for layers in (recorder.subject, recorder.object)]
    )
    torch.testing.assert_close(maps, raw)  # one 8x8 grid == map size: raw probabilities


def test_sd3_recorder_uses_the_models_q_and_k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(str(build_tiny_sd3(tmp_path / "tiny-sd3")), device="cpu")
    adapter = PipelineAdapter(model, 16, 8, 0.0)
    cond = adapter.encode_prompt("A red square above a blue circle")
    assert cond.text_length == 77 + 8  # CLIP chunk first, then T5
    torch.manual_seed(0)
    latent = torch.randn(1, 4, 16, 16)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        seen.append((query, key))
        return original_sdpa(query, key, value, **kwargs)

    recorder = AttentionRecorder(model.denoiser, "sd3")
    target = MapRequest("joint", cond.text_length, (2, 3), (6, 7), (32, 32), patch_size=2)  # a 16x16 token grid
    with torch.no_grad():
        expected = adapter.denoise(latent, 700.0, cond)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        with recorder.installed(), recorder.recording(target):
            got = adapter.denoise(latent, 700.0, cond)
    assert torch.equal(got, expected)
    assert len(seen) == recorder.num_layers == 1 and recorder.channels == 4
    q, k = seen[0]  # (B, heads, N + T, D): image first in diffusers' SD3 processor
    ref = torch.softmax(q[:, :, :256] @ k[:, :, 256:].transpose(-1, -2) / math.sqrt(8), dim=-1)  # context keys only
    torch.testing.assert_close(recorder.subject[0].maps.flatten(2), token_average(ref, [2, 3]), rtol=1e-5, atol=1e-6)


def test_recorder_restores_processors_after_an_error(tiny_sd: Path) -> None:
    unet = load_model(str(tiny_sd), family="sd14", device="cpu").pipe.unet
    before = dict(unet.attn_processors)
    recorder = AttentionRecorder(unet, "sd")
    with pytest.raises(RuntimeError, match="boom"), recorder.installed():
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in before.items())
    assert not recorder.active


# --------------------------------------------------------------------------------------------------------------------
# The command end to end.


def test_invert_end_to_end_unet(tiny_sd: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=3)
    out = tmp_path / "out"
    assert (
        run_invert(["--triplets", str(trip), "--out", str(out), "--model", str(tiny_sd), "--shard-size", "2", *SD_ARGS])
        == 0
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["family"] == "sd14" and meta["layout"] == "unet" and meta["channels"] == SD_CHANNELS
    assert meta["grid"] is None and meta["map_size"] == 16 and meta["num_steps"] == 3
    assert meta["record_steps"] == [1, 2] and meta["relations"] == sorted(RELATIONS) and meta["negatives"] is True
    assert meta["model"] == "tiny-sd" and meta["seed"] == 0
    index = read_jsonl(out / "index.jsonl")
    assert len(index) == 3 * 2 * 2  # items x prompts x steps
    items = read_jsonl(trip / "items.jsonl")
    truth = {it["id"]: it for it in items}
    for rec in index:
        item = truth[rec["item"]]
        assert rec["label"] == item["relation"] and rec["split"] == item["split"]
        assert rec["prompt"] == f"A red square {rec['prompt_relation']} a blue circle"
        assert (rec["prompt_relation"] == rec["label"]) == (rec["prompt_type"] == "pos")
        assert rec["prompt_relation"] in RELATIONS
        tensor = load_file(str(out / rec["shard"]))[rec["key"]]
        assert tensor.dtype == torch.float16 and tensor.shape == (2, SD_CHANNELS, 16, 16)
        assert torch.isfinite(tensor).all()
        torch.testing.assert_close(tensor.float().sum(dim=(-2, -1)), torch.ones(2, SD_CHANNELS), rtol=1e-2, atol=1e-2)
    assert sorted({r["shard"] for r in index}) == ["shards/shard_00000.safetensors", "shards/shard_00001.safetensors"]
    assert [d["item"] for d in read_jsonl(out / "done.jsonl")] == ["item0", "item1", "item2"]
    # A finished run resumed does nothing and keeps the index.
    assert (
        run_invert(["--triplets", str(trip), "--out", str(out), "--model", str(tiny_sd), "--shard-size", "2", *SD_ARGS])
        == 0
    )
    assert read_jsonl(out / "index.jsonl") == index


@pytest.mark.parametrize(
    ("builder", "family", "channels", "layout", "grid"),
    [
        (build_tiny_sdxl, "sdxl", 32, "unet", None),
        (build_tiny_sd3, "sd3", 4, "joint", 16),
    ],
)
def test_invert_end_to_end_sdxl_and_sd3_positives_only(builder, family, channels, layout, grid, tmp_path: Path) -> None:
    model = builder(tmp_path / f"tiny-{family}")
    trip = make_triplets(tmp_path / "trip", n=2)
    out = tmp_path / "out"
    assert (
        run_invert(
            [
                "--triplets",
                str(trip),
                "--out",
                str(out),
                "--model",
                str(model),
                "--no-negatives",
                "--steps",
                "3",
                "--record-steps",
                "0",
                "2",
                "--resolution",
                "16",
                "--max-sequence-length",
                "8",
                "--fixed-point-iterations",
                "1",
                "--psnr-threshold",
                "-100",
                "--split",
                "train",
            ]
        )
        == 0
    )
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["family"], meta["channels"], meta["layout"], meta["grid"]) == (family, channels, layout, grid)
    assert meta["negatives"] is False
    index = read_jsonl(out / "index.jsonl")
    assert [(r["item"], r["prompt_type"], r["step"]) for r in index] == [
        ("item0", "pos", 0),
        ("item0", "pos", 2),
        ("item1", "pos", 0),
        ("item1", "pos", 2),
    ]
    for rec in index:
        assert load_file(str(out / rec["shard"]))[rec["key"]].shape == (2, channels, 16, 16)


def test_invert_psnr_threshold_drops_everything(tiny_flux: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=2)
    out = tmp_path / "out"
    args = [
        "--triplets",
        str(trip),
        "--out",
        str(out),
        "--model",
        str(tiny_flux),
        *FLUX_ARGS[:-2],
        "--psnr-threshold",
        "200",
    ]
    assert run_invert(args) == 0
    assert read_jsonl(out / "index.jsonl") == []
    assert [d["item"] for d in read_jsonl(out / "done.jsonl")] == ["item0", "item1"]
    assert list((out / "shards").iterdir()) == []


def test_psnr_break_rule_failed_positive_drops_negative(tiny_flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(str(tiny_flux), device="cpu")
    settings = resolve_settings(
        parse(["--triplets", "x", "--out", "x", "--model", "x", *FLUX_ARGS[:-2], "--psnr-threshold", "20"]), model
    )
    inverter = DualInverter(model, settings, RELATIONS)
    item = triplet_folder.Item(1, "i", Path("x"), "red square", "blue circle", "above", "train")
    calls: list[str] = []

    def fake(psnr_by_type):
        def invert_prompt(item, prompt_type, relation, clean, image01, flow_psnr):
            calls.append(prompt_type)
            return PromptResult("p", prompt_type, relation, psnr_by_type[prompt_type], {})

        return invert_prompt

    image = torch.rand(1, 3, 16, 16)
    monkeypatch.setattr(inverter, "invert_prompt", fake({"pos": 10.0, "neg": 30.0}))
    assert inverter.run_item(item, image) == [] and calls == ["pos"]  # the negative is never run
    calls.clear()
    monkeypatch.setattr(inverter, "invert_prompt", fake({"pos": 30.0, "neg": 10.0}))
    assert [r.prompt_type for r in inverter.run_item(item, image)] == ["pos"] and calls == ["pos", "neg"]


def test_killed_flux_run_resumes_to_the_same_index(tiny_flux: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=3)
    common = [
        "--triplets",
        str(trip),
        "--model",
        str(tiny_flux),
        "--shard-size",
        "2",
        *FLUX_ARGS,
        "--record-steps",
        "3",
    ]
    reference = tmp_path / "reference"
    assert run_invert(["--out", str(reference), *common]) == 0

    resumed = tmp_path / "resumed"
    # The child process kills itself (SIGKILL: no cleanup, no flush) right after the writer has taken item2, the
    # first item of the second shard; the instrumentation lives in this test, not in the command.
    code = (
        "import argparse, os, signal, sys\n"
        "from training import invert, maps_folder\n"
        "add = maps_folder.MapsFolderWriter.add\n"
        "def add_then_die(self, item_id, records, tensors):\n"
        "    add(self, item_id, records, tensors)\n"
        "    if item_id == 'item2':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "maps_folder.MapsFolderWriter.add = add_then_die\n"
        "p = argparse.ArgumentParser(); invert.add_arguments(p)\n"
        "sys.exit(invert.run(p.parse_args(sys.argv[1:])))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code, "--out", str(resumed), *common],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # Killed after 3 items with shards of 2: one shard written, item2 computed but lost with the partial shard.
    assert [d["item"] for d in read_jsonl(resumed / "done.jsonl")] == ["item0", "item1"]
    assert {r["item"] for r in read_jsonl(resumed / "index.jsonl")} == {"item0", "item1"}
    # Simulate a kill between the shard rename and the done append: an index line of an unfinished item.
    with (resumed / "index.jsonl").open("a") as handle:
        handle.write(json.dumps({"item": "item2", "step": 1}) + '\n{"item": "ite')
    (resumed / "shards" / "shard_00001.safetensors.tmp").write_bytes(b"partial")

    assert run_invert(["--out", str(resumed), *common]) == 0
    assert read_jsonl(resumed / "index.jsonl") == read_jsonl(reference / "index.jsonl")
    ref_tensors, got_tensors = all_tensors(reference), all_tensors(resumed)
    assert ref_tensors.keys() == got_tensors.keys() and len(ref_tensors) == 3 * 2 * 1  # items x prompts x steps
    for key, value in ref_tensors.items():
        assert torch.equal(got_tensors[key], value), key
    assert not list((resumed / "shards").glob("*.tmp"))


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs.


def test_missing_model_folder_and_hub_id(tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=1)
    with pytest.raises(ModelLoadError, match=r"--model: no such folder or file: .*nowhere"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nowhere")])
    with pytest.raises(ModelLoadError, match=r"--model: 'runwayml/stable-diffusion-v1-5' .*never downloads"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", "runwayml/stable-diffusion-v1-5"])
    (tmp_path / "notdiffusers").mkdir()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_model(str(tmp_path / "notdiffusers"))
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="--config: .* single file"):
        load_model(str(single))


def test_missing_image_names_line_and_path(tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=3)
    (trip / "img1.png").unlink()
    with pytest.raises(invert.InvertInputError, match=r"items\.jsonl: field 'image' .*line 2: .*img1\.png"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "unused")])


def test_image_root_from_option_summary_or_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trip = make_triplets(tmp_path / "trip", n=2)
    images = tmp_path / "elsewhere"
    images.mkdir()
    for name in ("img0.png", "img1.png"):
        (trip / name).rename(images / name)
    (trip / "summary.json").write_text(json.dumps({"image_root": None}))
    with pytest.raises(triplet_folder.TripletFolderError, match="the current directory .*pass --image-root"):
        triplet_folder.read_items(trip, triplet_folder.resolve_image_root(trip, None), RELATIONS, None, None)
    monkeypatch.chdir(images)
    assert len(triplet_folder.read_items(trip, triplet_folder.resolve_image_root(trip, None), RELATIONS, None, None)) == 2
    monkeypatch.chdir(tmp_path)
    items = triplet_folder.read_items(trip, triplet_folder.resolve_image_root(trip, str(images)), RELATIONS, ["val"], None)
    assert items == []  # both items are in the train split
    (trip / "summary.json").write_text(json.dumps({"image_root": "../elsewhere"}))
    items = triplet_folder.read_items(trip, triplet_folder.resolve_image_root(trip, None), RELATIONS, ["train"], 1)
    assert [(it.id, it.line, it.image.name) for it in items] == [("item0", 1, "img0.png")]
    (trip / "summary.json").write_text(json.dumps({"image_root": "../missing"}))
    with pytest.raises(triplet_folder.TripletFolderError, match=r"summary\.json: field 'image_root' names .*missing"):
        triplet_folder.resolve_image_root(trip, None)


def test_unknown_relation_names_line_and_field(tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=3)
    lines = (trip / "items.jsonl").read_text().splitlines()
    bad = json.loads(lines[2])
    bad["relation"] = "next to"
    lines[2] = json.dumps(bad)
    (trip / "items.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(invert.InvertInputError, match=r"items\.jsonl line 3: field 'relation' is 'next to'"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "unused")])
    (trip / "mapping.json").write_text(json.dumps({"relations": ["above", "is"]}))
    with pytest.raises(invert.InvertInputError, match=r"mapping\.json: field 'relations' has 'is'"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "unused")])


def test_bad_options_and_family(tiny_sd: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=1)
    base = ["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tiny_sd)]
    # Official family => official channel count: SD1.x's 16 x 8 heads are not SD2.x's 195 channels.
    with pytest.raises(
        invert.InvertInputError, match=r"--family sd2: tiny-sd has 128 attention channels \(SD1\.x\), .*SD2\.x .* 195"
    ):
        run_invert([*base, "--family", "sd2", "--resolution", "16"])
    with pytest.raises(SystemExit):  # no escape hatch: an official family always gets its channel count
        parse([*base, "--family", "sd2", "--allow-channel-mismatch"])
    with pytest.raises(ValueError, match="--family: .*Unknown model family 'sd99'"):
        run_invert([*base, "--family", "sd99"])
    with pytest.raises(ValueError, match="--family: flux_dev .*'joint'"):
        run_invert([*base, "--family", "flux_dev"])
    with pytest.raises(ValueError, match="--family: cannot tell"):
        run_invert(base)  # cross_attention_dim 32 is neither SD1.x nor SD2.x
    with pytest.raises(invert.InvertInputError, match=r"--record-steps \[7\] are outside the 3-step schedule"):
        run_invert([*base, *SD_ARGS, "--record-steps", "7"])
    with pytest.raises(ValueError, match="--resolution: 18 px"):
        run_invert([*base, *SD_ARGS, "--resolution", "18"])


def test_resume_with_other_settings_is_refused(tiny_flux: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=1)
    out = tmp_path / "out"
    assert run_invert(["--triplets", str(trip), "--out", str(out), "--model", str(tiny_flux), *FLUX_ARGS]) == 0
    with pytest.raises(invert.InvertInputError, match=r"--out: .* other settings \(.*seed: 0 -> 5"):
        run_invert(["--triplets", str(trip), "--out", str(out), "--model", str(tiny_flux), *FLUX_ARGS, "--seed", "5"])


def test_phrase_beyond_the_text_window_names_line_and_field(tiny_sd: Path, tmp_path: Path) -> None:
    trip = make_triplets(tmp_path / "trip", n=2)
    lines = (trip / "items.jsonl").read_text().splitlines()
    long_item = json.loads(lines[1])
    long_item["subject"] = "red " + "abcdefghij" * 8  # 80 letter tokens with the tiny vocabulary
    lines[1] = json.dumps(long_item)
    (trip / "items.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(invert.InvertInputError, match=r"items\.jsonl line 2: field 'object' .*keeps only 77 tokens"):
        run_invert(["--triplets", str(trip), "--out", str(tmp_path / "o"), "--model", str(tiny_sd), *SD_ARGS])
