"""Unit tests of the toy world's pure parts: vocabulary, architecture names, bundle format, colour judge."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from l2s_core.relations import SPATIAL_RELATIONS
from l2s_core.toy_bundle import METADATA_KEY, PARTS, BundleError, load_bundle, read_bundle_metadata, save_bundle
from training.toy.judge import background_cleanliness, detect, judge
from training.toy.scenes import DEFAULT_KINDS, PAPER, ToyWorldConfig, render_scene
from training.toy.vocabulary import CLIP_TOKEN_IDS, END_ID, START_ID, prompt_ids, relation_prompt

# -- vocabulary ---------------------------------------------------------------------------------------------------

def test_prompt_ids_match_the_clip_ids_of_each_word() -> None:
    ids = prompt_ids("A red square to the left of a blue circle")
    # CLIP BPE ids of a</w> red</w> square</w> to</w> the</w> left</w> of</w> a</w> blue</w> circle</w>
    assert ids[:12] == [START_ID, 320, 736, 3999, 531, 518, 1823, 539, 320, 1746, 7117, END_ID]
    assert len(ids) == 77 and set(ids[12:]) == {END_ID}


def test_prompt_ids_refuse_unknown_words_and_name_them() -> None:
    with pytest.raises(ValueError, match="'dog'"):
        prompt_ids("a dog to the left of a red square")


def test_word_level_tokenizer_agrees_with_prompt_ids_on_every_toy_prompt() -> None:
    pytest.importorskip("transformers")
    from training.toy.vocabulary import build_tokenizer

    tokenizer = build_tokenizer()
    for a in DEFAULT_KINDS:
        for b in DEFAULT_KINDS:
            if a == b:
                continue
            for relation in SPATIAL_RELATIONS:
                prompt = relation_prompt(a, relation, b)
                got = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
                assert got == prompt_ids(prompt), prompt
    assert tokenizer("red square", add_special_tokens=False).input_ids == [
        CLIP_TOKEN_IDS["red"], CLIP_TOKEN_IDS["square"]]


# -- architecture ---------------------------------------------------------------------------------------------------

def test_taesd_names_round_trip_and_decoder_indices_shift_by_the_clamp() -> None:
    pytest.importorskip("diffusers")
    from training.toy.architecture import autoencoder_from_taesd, build_autoencoder, taesd_state_dict

    torch.manual_seed(0)
    model = build_autoencoder().eval()
    names = taesd_state_dict(model)
    assert "taesd_decoder.1.weight" in names and "taesd_decoder.0.weight" not in names  # 0 is TAESD's Clamp
    assert names["taesd_decoder.1.weight"].shape == (64, 4, 3, 3)
    assert "taesd_encoder.0.weight" in names and float(names["vae_scale"]) == 1.0
    back = autoencoder_from_taesd(names).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.decode(model.encode(x).latents).sample, back.decode(back.encode(x).latents).sample)


def test_comfy_unet_config_describes_the_diffusers_unet() -> None:
    pytest.importorskip("diffusers")
    from training.toy.architecture import ToyArchitecture, build_unet, comfy_unet_config

    arch = ToyArchitecture()
    unet = build_unet(arch)
    config = comfy_unet_config(arch)
    heads = [m.heads for n, m in unet.named_modules() if n.endswith("attn2")]
    assert len(heads) == 7 and set(heads) == {config["num_heads"]}  # 2 down + mid + 2x2 up
    assert config["model_channels"] == unet.config.block_out_channels[0]
    assert config["context_dim"] == unet.config.cross_attention_dim == arch.text_width


def test_architecture_rejects_widths_comfyui_cannot_group_norm() -> None:
    from training.toy.architecture import ToyArchitecture

    with pytest.raises(ValueError, match="multiple of 32"):
        ToyArchitecture(unet_channels=40)


# -- bundle ---------------------------------------------------------------------------------------------------------

def _parts() -> dict[str, dict[str, torch.Tensor]]:
    return {"vae": {"w": torch.randn(3, 2), "vae_scale": torch.tensor(1.0)}, "unet": {"a.b": torch.randn(4)},
            "text_encoder": {"t": torch.randn(2, 2)}}


def test_bundle_round_trip_keeps_parts_metadata_and_scalars(tmp_path) -> None:
    path = tmp_path / "world.safetensors"
    parts = _parts()
    save_bundle(path, parts, {"latent_scale_factor": 0.5, "world": {"kinds": ["red square"]}})
    bundle = load_bundle(path)
    assert bundle.scale_factor == 0.5 and bundle.meta["world"]["kinds"] == ["red square"]
    assert set(bundle.parts) == {"vae", "unet", "text_encoder"}
    assert torch.allclose(bundle.parts["vae"]["w"], parts["vae"]["w"], atol=1e-2)  # stored in fp16
    assert bundle.parts["vae"]["vae_scale"].ndim == 0 and float(bundle.parts["vae"]["vae_scale"]) == 1.0


def test_bundle_errors_name_the_file_and_the_problem(tmp_path) -> None:
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(BundleError, match="not a toy-world bundle"):
        read_bundle_metadata(plain)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match="not a safetensors file"):
        read_bundle_metadata(garbage)
    future = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(future),
              metadata={METADATA_KEY: json.dumps({"format": "l2s-toy-world", "version": 99})})
    with pytest.raises(BundleError, match="version 99"):
        read_bundle_metadata(future)
    with pytest.raises(BundleError, match="No toy-world bundle"):
        read_bundle_metadata(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="missing"):
        save_bundle(tmp_path / "x.safetensors", {"vae": {}}, {})


# -- judge ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relation", SPATIAL_RELATIONS)
def test_judge_reads_the_drawn_relation_and_rejects_the_swapped_one(relation: str) -> None:
    for config in (ToyWorldConfig(min_object_frac=0.22, max_object_frac=0.36),  # the first world: 64 px, 4 tints
                   ToyWorldConfig(size=128, min_object_frac=0.30, max_object_frac=0.45, backgrounds=(PAPER,))):
        for seed in range(20):
            scene = render_scene("purple cross", "yellow star", relation, random.Random(seed), config)
            image = np.asarray(scene.image)
            verdict = judge(image, "purple cross", relation, "yellow star")
            assert verdict.correct and verdict.present == (True, True), (seed, verdict)
            assert not judge(image, "yellow star", relation, "purple cross").correct
            assert background_cleanliness(image, verdict) == 1.0


def test_judge_reports_a_missing_object_and_ignores_specks() -> None:
    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    image[10:20, 10:20] = (220, 30, 30)  # a red square
    image[50, 50] = (30, 70, 220)  # one blue pixel: a speck, not an object
    verdict = judge(image, "red square", "above", "blue circle")
    assert verdict.present == (True, False) and not verdict.correct and "not detected" in verdict.reason
    (found,) = detect(image, ["red square"])
    assert found.box == (10.0, 10.0, 20.0, 20.0) and found.score == 100.0
    assert verdict.summary("above") == "object missing - wrong"


def test_judge_needs_the_minimum_area_and_it_is_far_below_the_smallest_drawn_object() -> None:
    image = np.full((128, 128, 3), PAPER, dtype=np.uint8)
    image[10:19, 10:19] = (220, 30, 30)  # 81 px: below 0.5 % of 128 x 128 (82 px)
    assert detect(image, ["red square"]) == []
    image[10:19, 19] = (220, 30, 30)  # 90 px
    assert [d.name for d in detect(image, ["red square"])] == ["red square"]
    config = ToyWorldConfig(size=128, min_object_frac=0.30, max_object_frac=0.45, backgrounds=(PAPER,))
    smallest = min(d.score for seed in range(30) for d in detect(
        np.asarray(render_scene("yellow star", "green triangle", "above", random.Random(seed), config).image),
        ["yellow star", "green triangle"]))
    assert smallest > 3 * 82, smallest


def test_the_judges_palette_is_the_worlds_own_colours() -> None:
    from training.toy.judge import world_colours

    image = np.full((64, 64, 3), PAPER, dtype=np.uint8)
    image[10:30, 10:30] = (245, 150, 20)  # amber: nearest orange (distance 20), yellow is 50 away
    assert detect(image, ["yellow star"]) == []  # every toy colour in the palette: the pixels are orange's
    colours = world_colours(["red square", "yellow star", "teal diamond"])
    assert colours == ("red", "yellow", "teal")
    (found,) = detect(image, ["yellow star"], colours=colours)  # a world without orange: they are the star's
    assert found.box == (10.0, 10.0, 30.0, 30.0)
    assert [d.name for d in detect(image, ["orange diamond"], colours=colours)] == ["orange diamond"]  # asked: added
    with pytest.raises(ValueError, match="'cyan'"):
        detect(image, ["yellow star"], colours=("cyan",))


def test_background_cleanliness_counts_stray_colour_away_from_the_objects() -> None:
    image = np.full((100, 100, 3), PAPER, dtype=np.uint8)
    image[10:30, 10:30] = (220, 30, 30)
    image[70:90, 10:30] = (30, 70, 220)
    verdict = judge(image, "red square", "above", "blue circle")
    assert verdict.correct and background_cleanliness(image, verdict) == 1.0 == verdict.clean
    image[0:10, 50:100] = (120, 120, 120)  # 500 dirty pixels outside both boxes (grown by 2 px)
    outside = 100 * 100 - 2 * 24 * 24
    assert background_cleanliness(image, verdict) == pytest.approx(1 - 500 / outside)
    assert verdict.summary("above") == "above - right" and verdict.summary("below") == "above - wrong"


def test_judge_calls_an_image_of_noise_wrong_even_with_both_colours_in_place() -> None:
    gen = np.random.default_rng(0)
    image = gen.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)  # coloured noise
    image[10:50, 40:80] = (220, 30, 30)  # a red square above ...
    image[80:120, 40:80] = (30, 70, 220)  # ... a blue square
    verdict = judge(image, "red square", "above", "blue circle")
    assert verdict.present == (True, True) and "above" in verdict.found
    assert verdict.noise and not verdict.correct and "not a scene" in verdict.reason
    assert verdict.summary("above") == "noise, not a scene - wrong"
    image[:10] = PAPER  # still mostly noise: wrong; a clean background makes the same objects right
    assert not judge(image, "red square", "above", "blue circle").correct
    clean = np.full((128, 128, 3), PAPER, dtype=np.uint8)
    clean[10:50, 40:80], clean[80:120, 40:80] = (220, 30, 30), (30, 70, 220)
    assert judge(clean, "red square", "above", "blue circle").correct


def test_benchmark_grid_marks_the_one_usual_arrangement_of_each_pair() -> None:
    from training.toy.benchmark import Row, format_table, prompt_grid
    from training.toy.scenes import usual_relation

    grid = prompt_grid(DEFAULT_KINDS, 6)
    assert len(grid) == 24
    for start in range(0, 24, 4):  # four relations per ordered pair
        pair = grid[start:start + 4]
        assert [g.relation for g in pair] == list(SPATIAL_RELATIONS)
        assert sum(g.usual for g in pair) == 1
        usual = next(g for g in pair if g.usual)
        assert usual.relation == usual_relation(usual.subject, usual.object, DEFAULT_KINDS)
    row = Row("plain", 8, 0.5, 0.75, 0.3, 0.0, None, accuracy_usual=1.0, accuracy_unusual=1 / 3, cleanliness=0.9)
    line = format_table([row]).splitlines()[-1]
    assert line == "| plain | 8 | 0.500 | 1.000 | 0.333 | 0.750 | 0.900 | 0.30 | 0.0 |"
    assert len(prompt_grid(DEFAULT_KINDS, 30)) == 120  # the default grid: every ordered pair x 4 relations


def test_benchmark_batches_share_relation_words_and_cover_the_grid_once() -> None:
    from training.toy.benchmark import _batches, prompt_grid

    grid = prompt_grid(DEFAULT_KINDS, 30)
    batches = _batches(grid, [7, 8], 50)
    assert sorted((i, seed) for batch in batches for i, _, seed in batch) == [
        (i, s) for i in range(len(grid)) for s in (7, 8)]
    assert all(len(b) <= 50 and len({item.relation for _, item, _ in b}) == 1 for b in batches)


class _DrawingSampler:
    """Stands in for :class:`training.toy.sampling.ToySampler` in the benchmark's bookkeeping test: it draws each
    requested scene exactly (the toy scene renderer), except that one kind is painted over with the background."""

    def __init__(self, dropped: str) -> None:
        from types import SimpleNamespace

        self.dropped = dropped
        self.bundle = SimpleNamespace(meta={"world": {"kinds": list(DEFAULT_KINDS), "backgrounds": [list(PAPER)]}})

    def sample(self, prompts, seeds, *, subject, relation, obj, **_):
        from training.toy.sampling import Samples
        from training.toy.scenes import ObjectKind

        config = ToyWorldConfig(size=128, min_object_frac=0.3, max_object_frac=0.45, backgrounds=(PAPER,))
        images = []
        for s, r, o, seed in zip(subject, relation, obj, seeds, strict=True):
            image = np.array(render_scene(s, o, r, seed, config).image)  # (128, 128, 3) uint8
            image[(image == ObjectKind.parse(self.dropped).rgb).all(-1)] = PAPER
            images.append(image)
        return Samples(np.stack(images), 0.1 * len(prompts), (0,) * len(prompts))


def test_benchmark_counts_the_images_each_requested_kind_is_missing_from() -> None:
    from training.toy.benchmark import Condition, prompt_grid, run_condition

    grid = prompt_grid(DEFAULT_KINDS, 30)
    row = run_condition(_DrawingSampler("blue circle"), Condition("plain"), grid, [3], steps=20, cfg=8.0)
    asking_for_blue = sum("blue circle" in (g.subject, g.object) for g in grid)  # 10 ordered pairs x 4 relations
    assert asking_for_blue == 40
    assert row.missing == {"blue circle": asking_for_blue}
    assert row.presence == pytest.approx(1 - asking_for_blue / len(grid))
    assert row.accuracy == row.presence  # every image that has both objects is drawn in the requested relation


def test_demo_report_reads_each_panel_and_saves_an_enlarged_grid(tmp_path) -> None:
    from PIL import Image

    from training.toy.demo import parse_request, report

    request = parse_request("a blue circle to the left of a red square")
    assert (request.subject, request.relation, request.object) == ("blue circle", "to the left of", "red square")
    with pytest.raises(ValueError, match="Not a toy relation prompt"):
        parse_request("a blue circle near a red square")
    config = ToyWorldConfig(size=128, min_object_frac=0.30, max_object_frac=0.45, backgrounds=(PAPER,))
    paths = {}
    for relation in ("left of", "right of"):
        scene = render_scene("blue circle", "red square", relation, random.Random(3), config)
        paths[relation] = tmp_path / f"{relation.replace(' ', '_')}.png"
        scene.image.save(paths[relation])
    out = tmp_path / "grid.png"
    readings = report("a blue circle to the left of a red square",
                      [(0, paths["right of"], paths["left of"]), (1, paths["left of"], paths["left of"])], out)
    assert [r.line() for r in readings] == [
        "seed 0: plain: to the right of - wrong; steered: to the left of - right",
        "seed 1: plain: to the left of - right; steered: to the left of - right"]
    grid = Image.open(out)
    assert grid.width >= 2 * 256 and grid.height >= 2 * 256


def test_demo_report_judges_with_the_palette_of_the_world_it_is_given(tmp_path) -> None:
    from training.toy.demo import report, world_palette
    from training.toy.judge import Palette

    world = tmp_path / "w.safetensors"
    described = {"kinds": ["red square", "yellow star"], "backgrounds": [list(PAPER)]}
    save_bundle(world, {part: {"w": torch.zeros(1)} for part in PARTS}, {"world": described})
    assert world_palette(world) == Palette(colours=("red", "yellow"), backgrounds=(PAPER,))
    image = np.full((64, 64, 3), PAPER, dtype=np.uint8)
    image[5:20, 20:40] = (245, 150, 20)  # an amber star (orange is not this world's colour) above ...
    image[40:60, 20:40] = (220, 30, 30)  # ... a red square
    from PIL import Image

    path = tmp_path / "p.png"
    Image.fromarray(image).save(path)
    prompt = "a yellow star above a red square"
    (every_colour,) = report(prompt, [(0, path, path)], tmp_path / "a.png")
    (own_colours,) = report(prompt, [(0, path, path)], tmp_path / "b.png", world=world)
    assert every_colour.plain == "subject missing - wrong" and own_colours.plain == "above - right"
    with pytest.raises(BundleError):
        report(prompt, [(0, path, path)], tmp_path / "c.png", world=tmp_path / "missing.safetensors")
