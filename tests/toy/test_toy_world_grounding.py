"""The toy UNet's token-grounding loss: exact box coverage, token positions, the loss's direction, and a capture
that changes nothing about the UNet's output and leaves its processors as they were."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from training.toy.architecture import ToyArchitecture, build_unet  # noqa: E402
from training.toy.build import BuildConfig, GroundingTargets, render_scenes, train_unet  # noqa: E402
from training.toy.grounding import (  # noqa: E402
    GroundingCapture,
    binding_loss,
    box_masks,
    grounding_loss,
    object_boxes_loss_inputs,
    object_token_positions,
)
from training.toy.scenes import COLOURS  # noqa: E402
from training.toy.vocabulary import prompt_ids, relation_prompt, words_of  # noqa: E402


def test_box_masks_are_the_covered_fraction_of_each_cell() -> None:
    masks = box_masks(torch.tensor([[0, 0, 8, 8], [4, 8, 20, 12], [0, 0, 64, 64]]), image_size=64, grid=8)
    assert masks.shape == (3, 64)
    grid = masks.reshape(3, 8, 8)
    assert grid[0, 0, 0] == 1 and grid[0].sum() == 1  # exactly one cell
    # x 4..20 covers half of cell 0, all of cell 1, half of cell 2; y 8..12 covers half of row 1
    assert torch.allclose(grid[1, 1, :3], torch.tensor([0.25, 0.5, 0.25]))
    assert grid[1].sum() == pytest.approx(16 * 4 / 64)  # box area / cell area
    assert torch.all(grid[2] == 1)
    coarse = box_masks(torch.tensor([[0, 0, 8, 8]]), image_size=64, grid=4).reshape(4, 4)
    assert coarse[0, 0] == pytest.approx(0.25) and coarse.sum() == pytest.approx(0.25)


@pytest.mark.parametrize("relation", ["above", "to the left of"])
def test_object_token_positions_point_at_the_colour_and_shape_words(relation: str) -> None:
    prompt = relation_prompt("red square", relation, "blue circle")
    (s0, s1), (o0, o1) = object_token_positions(prompt)
    words = ["<start>", *words_of(prompt)]
    assert (words[s0], words[s1]) == ("red", "square")
    assert (words[o0], words[o1]) == ("blue", "circle")
    assert len(prompt_ids(prompt)) == 77 and o1 < 77
    with pytest.raises(ValueError, match="Not a toy relation prompt"):
        object_token_positions("red square")


def test_a_single_object_prompt_grounds_its_words_to_its_own_box() -> None:
    assert object_token_positions("a teal diamond") == ((2, 3), (2, 3))
    scenes = render_scenes(BuildConfig(num_images=4, solo_images=6), ToyArchitecture())
    assert scenes.prompts[4:] == [f"a {k}" for k in BuildConfig().kinds]  # every kind once, in turn
    positions, boxes = object_boxes_loss_inputs(scenes.prompts, scenes.subject_boxes, scenes.object_boxes)
    assert positions[4:].tolist() == [[2, 3, 2, 3]] * 6
    for i in range(4, 10):
        assert torch.equal(boxes[i], scenes.subject_boxes[i].expand(4, 4))
        x0, y0, x1, y1 = (int(v) for v in scenes.subject_boxes[i])
        colour = COLOURS[words_of(scenes.prompts[i])[1]]
        patch = scenes.images[i, :, y0:y1, x0:x1].reshape(3, -1).T  # (3, h, w) -> (h*w, 3)
        assert colour in {tuple(int(c) for c in rgb) for rgb in patch}
        outside = scenes.images[i].clone()
        outside[:, y0:y1, x0:x1] = 236
        assert torch.all(outside == 236), "a single-object scene draws nothing outside its object's box"


def test_single_object_scenes_leave_the_pair_scenes_as_they_were() -> None:
    pairs = render_scenes(BuildConfig(num_images=12), ToyArchitecture())
    mixed = render_scenes(BuildConfig(num_images=12, solo_images=3), ToyArchitecture())
    assert torch.equal(mixed.images[:12], pairs.images) and mixed.prompts[:12] == pairs.prompts
    assert mixed.relations[12:] == ["", "", ""]


def test_scene_boxes_follow_the_prompt_order_even_when_the_prompt_is_swapped() -> None:
    scenes = render_scenes(BuildConfig(num_images=40), ToyArchitecture())
    for i, prompt in enumerate(scenes.prompts):
        words = words_of(prompt)  # "a <colour> <shape> <relation ...> a <colour> <shape>"
        for box, colour in ((scenes.subject_boxes[i], words[1]), (scenes.object_boxes[i], words[-2])):
            x0, y0, x1, y1 = (int(v) for v in box)
            patch = scenes.images[i, :, y0:y1, x0:x1].reshape(3, -1).T  # (3, h, w) -> (h*w, 3)
            drawn = {tuple(int(c) for c in rgb) for rgb in patch}
            assert COLOURS[colour] in drawn, f"scene {i}: the box of the {colour!r} object shows no {colour} pixel"


def test_grounding_loss_is_low_when_the_tokens_attend_inside_their_boxes() -> None:
    positions, boxes = object_boxes_loss_inputs(
        [relation_prompt("red square", "above", "blue circle")], torch.tensor([[0, 0, 32, 32]]),
        torch.tensor([[32, 32, 64, 64]]))
    assert positions.tolist() == [[2, 3, 6, 7]] and boxes.shape == (1, 4, 4)
    grid = torch.zeros(8, 8)
    grid[:4, :4] = 1  # the subject's quarter

    def probs_with(subject_map: torch.Tensor, object_map: torch.Tensor) -> torch.Tensor:
        p = torch.full((1, 2, 64, 77), 1e-3)
        p[0, :, :, 2] = p[0, :, :, 3] = subject_map.flatten()
        p[0, :, :, 6] = p[0, :, :, 7] = object_map.flatten()
        return p / p.sum(-1, keepdim=True)

    valid = torch.ones(1, dtype=torch.bool)
    right = grounding_loss([probs_with(grid, grid.flip(0, 1))], positions, boxes, 64, valid)
    wrong = grounding_loss([probs_with(grid.flip(0, 1), grid)], positions, boxes, 64, valid)
    flat = grounding_loss([probs_with(torch.ones(8, 8), torch.ones(8, 8))], positions, boxes, 64, valid)
    assert float(right) < 0.01 < float(flat) == pytest.approx(-torch.log(torch.tensor(0.25)).item(), abs=1e-3)
    assert float(wrong) > float(flat)
    nothing = grounding_loss([probs_with(grid, grid)], positions, boxes, 64, torch.zeros(1, dtype=torch.bool))
    assert float(nothing) == 0.0


def test_binding_loss_asks_each_box_to_read_its_own_object_words() -> None:
    """Lowest when each box's pixels read their object's words, higher when those words get little of the pixels'
    attention there, or are spread everywhere, highest when the objects' words are swapped."""
    positions, boxes = object_boxes_loss_inputs(
        [relation_prompt("red square", "above", "blue circle")], torch.tensor([[0, 0, 32, 32]]),
        torch.tensor([[32, 32, 64, 64]]))
    grid = torch.zeros(8, 8)
    grid[:4, :4] = 1  # the subject's quarter

    def probs_with(subject_map: torch.Tensor, object_map: torch.Tensor, mass: float = 1.0) -> torch.Tensor:
        p = torch.full((1, 2, 64, 77), 1e-3)
        p[0, :, :, 2] = p[0, :, :, 3] = subject_map.flatten() * mass
        p[0, :, :, 6] = p[0, :, :, 7] = object_map.flatten() * mass
        return p / p.sum(-1, keepdim=True)

    valid = torch.ones(1, dtype=torch.bool)
    right = float(binding_loss([probs_with(grid, grid.flip(0, 1))], positions, boxes, 64, valid))
    faint = float(binding_loss([probs_with(grid, grid.flip(0, 1), mass=0.01)], positions, boxes, 64, valid))
    spread = float(binding_loss([probs_with(torch.ones(8, 8), torch.ones(8, 8))], positions, boxes, 64, valid))
    swapped = float(binding_loss([probs_with(grid.flip(0, 1), grid)], positions, boxes, 64, valid))
    assert right < 0.05 < faint < spread < swapped
    # the grounding loss cannot tell the faint maps from the right ones: only where the words attend counts there
    assert float(grounding_loss([probs_with(grid, grid.flip(0, 1), mass=0.01)], positions, boxes, 64, valid)) < 0.05
    none = binding_loss([probs_with(grid, grid)], positions, boxes, 64, torch.zeros(1, dtype=torch.bool))
    assert float(none) == 0.0


def test_capture_keeps_the_unet_output_and_restores_its_processors() -> None:
    torch.manual_seed(0)
    unet = build_unet(ToyArchitecture()).eval()
    latent, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 64)
    t = torch.tensor([500, 20])
    before = {name: type(m.processor) for name, m in unet.named_modules() if name.endswith("attn2")}
    with torch.no_grad():
        reference = unet(latent, t, encoder_hidden_states=context).sample
        capture = GroundingCapture(unet)
        with capture.installed():
            captured = unet(latent, t, encoder_hidden_states=context).sample
            probs = capture.take()
    assert torch.allclose(captured, reference, atol=1e-5)
    assert len(probs) == 7 and sum(p.shape[1] for p in probs) == 28
    assert {p.shape[2] for p in probs} == {64, 16}  # 8x8 and 4x4 grids
    assert all(torch.allclose(p.sum(-1), torch.ones(())) for p in probs)
    assert {name: type(m.processor) for name, m in unet.named_modules() if name.endswith("attn2")} == before
    assert capture.take() == []


def test_grounded_training_lowers_the_grounding_loss() -> None:
    """The same few dozen steps with the grounding term move the object tokens' attention into their boxes."""
    arch = ToyArchitecture()
    scenes = render_scenes(BuildConfig(num_images=32), arch)
    latents = torch.nn.functional.avg_pool2d(scenes.images.float() / 127.5 - 1, 8)  # (N, 3, S/8, S/8) stand-in latents
    latents = torch.cat([latents, latents[:, :1]], 1)  # 4 channels
    distinct = sorted(set(scenes.prompts))
    index = torch.tensor([distinct.index(p) for p in scenes.prompts])
    embeddings = torch.randn(len(distinct) + 1, 77, arch.text_width, generator=torch.Generator().manual_seed(1))
    positions, boxes = object_boxes_loss_inputs(scenes.prompts, scenes.subject_boxes, scenes.object_boxes)
    targets = GroundingTargets(positions=positions, boxes=boxes)

    def held_out_loss(unet: torch.nn.Module) -> float:
        capture = GroundingCapture(unet)
        with torch.no_grad(), capture.installed():
            unet(latents, torch.full((32,), 300), encoder_hidden_states=embeddings[index])
            return float(grounding_loss(capture.take(), positions, boxes, arch.image_size,
                                        torch.ones(32, dtype=torch.bool)))

    def trained(weight: float) -> torch.nn.Module:
        config = BuildConfig(unet_steps=60, unet_batch=16, grounding_weight=weight, binding_weight=0.0, ema_decay=0.5)
        return train_unet(latents, index, embeddings, len(distinct), arch, config, targets)[0]

    plain, grounded = held_out_loss(trained(0.0)), held_out_loss(trained(1.0))
    print(f"grounding loss after 60 steps: plain {plain:.3f}, grounded {grounded:.3f}")
    assert grounded < 0.92 * plain


def test_a_share_of_pair_prompts_can_leave_the_relation_unsaid() -> None:
    named = render_scenes(BuildConfig(num_images=60, relation_captions=1.0), ToyArchitecture())
    some = render_scenes(BuildConfig(num_images=60, relation_captions=0.5), ToyArchitecture())
    assert torch.equal(some.images, named.images), "the share changes the prompts only, never the scenes"
    unsaid = [i for i, p in enumerate(some.prompts) if " and a " in p]
    assert 15 <= len(unsaid) <= 45, f"about half the prompts should name no relation, got {len(unsaid)} of 60"
    for i in range(60):
        if i in unsaid:
            assert some.relations[i] == ""
            # the same two objects, in the same order, with the same boxes as the prompt naming the relation
            assert words_of(some.prompts[i])[1:3] == words_of(named.prompts[i])[1:3]
            assert words_of(some.prompts[i])[-2:] == words_of(named.prompts[i])[-2:]
        else:
            assert (some.prompts[i], some.relations[i]) == (named.prompts[i], named.relations[i])
    assert torch.equal(some.subject_boxes, named.subject_boxes) and torch.equal(some.object_boxes, named.object_boxes)
    positions, _ = object_boxes_loss_inputs(some.prompts, some.subject_boxes, some.object_boxes)
    assert positions[unsaid[0]].tolist() == [2, 3, 6, 7]  # "a <colour> <shape> and a <colour> <shape>"
    with pytest.raises(ValueError, match="share of pair prompts"):
        BuildConfig(relation_captions=1.5)
