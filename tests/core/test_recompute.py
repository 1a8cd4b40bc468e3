"""Per-block recomputation: same values and gradients, side channels replayed, blocks restored, bytes counted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from l2s_core.recompute import needs_recomputation, recomputed_blocks, saved_tensor_bytes


class Recorder:
    """A side channel like the attention capture: blocks append maps while a request is active."""

    def __init__(self) -> None:
        self.active = False
        self.maps: list[torch.Tensor] = []
        self.calls = 0

    def replay(self) -> Callable[[], contextlib.AbstractContextManager[Any]]:
        active, calls = self.active, self.calls

        @contextlib.contextmanager
        def restore() -> Iterator[None]:
            saved = (self.active, self.maps, self.calls)
            self.active, self.maps, self.calls = active, [], calls
            try:
                yield
            finally:
                self.active, self.maps, self.calls = saved

        return restore


class Block(torch.nn.Module):
    def __init__(self, recorder: Recorder, width: int) -> None:
        super().__init__()
        self.recorder = recorder
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor, options: dict[str, int]) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.a(x))
        if self.recorder.active:
            self.recorder.calls += 1
            self.recorder.maps.append(h.softmax(-1)[..., :3] * options["scale"])  # a map that depends on the options
        options["scale"] += 1  # callers' dicts are mutated, as ComfyUI's transformer_options are
        return x + self.b(h)


def _model(recorder: Recorder) -> torch.nn.ModuleList:
    torch.manual_seed(0)
    return torch.nn.ModuleList(Block(recorder, 16) for _ in range(4))


def _loss_and_grad(blocks: torch.nn.ModuleList, recorder: Recorder, x0: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    x = x0.clone().requires_grad_(True)
    recorder.active, recorder.maps, recorder.calls = True, [], 0
    options = {"scale": 1}
    h = x
    for block in blocks:
        h = block(h, options)
    maps = torch.stack(recorder.maps)
    recorder.active = False  # the backward runs after the capture has ended, as in steering
    loss = (maps ** 2).sum() + h.pow(2).mean()
    loss.backward()
    return loss.detach(), x.grad


def test_recomputation_gives_the_same_loss_and_gradient_with_a_replayed_side_channel() -> None:
    recorder = Recorder()
    blocks = _model(recorder)
    x0 = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    loss, grad = _loss_and_grad(blocks, recorder, x0)
    with recomputed_blocks(list(blocks), recorder.replay) as wrapped:
        assert wrapped == 4
        loss_rc, grad_rc = _loss_and_grad(blocks, recorder, x0)
    assert torch.allclose(loss, loss_rc, rtol=0, atol=1e-6)
    assert (grad - grad_rc).abs().max() <= 1e-6
    assert grad.abs().max() > 0


def test_recomputation_keeps_less_for_the_backward() -> None:
    recorder = Recorder()
    blocks = _model(recorder)
    x0 = torch.randn(64, 32, 16, generator=torch.Generator().manual_seed(1))
    weights = list(blocks.parameters())

    def forward() -> None:
        h = x0.clone().requires_grad_(True)
        options = {"scale": 1}
        for block in blocks:
            h = block(h, options)

    plain = saved_tensor_bytes(forward, weights)
    with recomputed_blocks(list(blocks), recorder.replay):
        recomputed = saved_tensor_bytes(forward, weights)
    one_activation = x0.numel() * 4
    assert plain >= 4 * 3 * one_activation  # per block: the input, a(x) and gelu(a(x)) at least
    assert recomputed <= 4 * one_activation + 1024  # per block: its input only


def test_blocks_are_restored_even_when_the_body_raises() -> None:
    recorder = Recorder()
    blocks = _model(recorder)
    own = blocks[1].forward  # an instance-level forward (another pack's patch) must come back as it was
    blocks[1].forward = own
    with pytest.raises(RuntimeError, match="boom"), recomputed_blocks(list(blocks)):
        assert "forward" in blocks[0].__dict__
        raise RuntimeError("boom")
    assert "forward" not in blocks[0].__dict__
    assert blocks[1].__dict__["forward"] is own


def test_without_gradients_the_blocks_run_as_usual() -> None:
    recorder = Recorder()
    blocks = _model(recorder)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = blocks[0](x, {"scale": 1})
        with recomputed_blocks(list(blocks)):
            assert torch.equal(blocks[0](x, {"scale": 1}), expected)


def test_counting_ignores_excluded_weights_and_counts_shared_storage_once() -> None:
    w = torch.randn(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    assert saved_tensor_bytes(lambda: x @ w) == w.numel() * 4  # the gradient of x needs w only
    assert saved_tensor_bytes(lambda: x @ w, [w]) == 0  # ... and w is a weight that exists anyway
    assert saved_tensor_bytes(lambda: x * x) == x.numel() * 4  # x saved twice, one storage


@pytest.mark.parametrize(("mode", "kept", "free", "expected"), [
    ("fast", 10**12, 1, False),
    ("low", 1, 10**12, True),
    ("auto", 10, 100, False),
    ("auto", 90, 100, True),
    ("auto", None, 100, True),
])
def test_memory_modes(mode: str, kept: int | None, free: int | None, expected: bool) -> None:
    assert needs_recomputation(mode, kept, free) is expected


def test_unknown_memory_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, fast, low"):
        needs_recomputation("tiny", 1, 1)


class InPlaceBlock(torch.nn.Module):
    """Updates its input in place after a norm kept it for the backward (as FLUX's single-stream block does)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width, elementwise_affine=False)
        self.a = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x += self.a(self.norm(x)).tanh()
        return x


def test_blocks_that_update_their_input_in_place_recompute_from_the_value_before() -> None:
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(InPlaceBlock(16) for _ in range(3))
    x0 = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))

    def loss_and_grad() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = x0.clone().requires_grad_(True)
        with torch.autograd.graph.allow_mutation_on_saved_tensors():
            h = x * 1.0
            first_input = h  # the caller keeps a reference, and sees the block's in-place update through it
            for block in blocks:
                h = block(h)
            loss = h.pow(2).sum() + first_input.sum()
            loss.backward()
        return loss.detach(), x.grad, first_input.detach()

    loss, grad, seen = loss_and_grad()
    with recomputed_blocks(list(blocks)):
        loss_and_grad()  # the first pass learns which arguments each block updates; the second copies only those
        loss_rc, grad_rc, seen_rc = loss_and_grad()
    assert torch.equal(seen, seen_rc)  # the update reached the caller's tensor, as without recomputation
    assert torch.allclose(loss, loss_rc, rtol=0, atol=1e-5)
    assert (grad - grad_rc).abs().max() <= 1e-6


class TwoStreamBlock(torch.nn.Module):
    """Normalises its second stream, updates it in place, normalises it again (FLUX's double-stream block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(width, elementwise_affine=False)
        self.norm2 = torch.nn.LayerNorm(width, elementwise_affine=False)
        self.a = torch.nn.Linear(width, width)
        self.b = torch.nn.Linear(width, width)

    def forward(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mixed = self.a(self.norm1(txt)) + img.mean(dim=1, keepdim=True)
        txt += mixed.tanh()
        txt += self.b(self.norm2(txt)).sigmoid()
        return img + txt.mean(dim=1, keepdim=True), txt


def test_blocks_that_update_a_saved_tensor_in_place_inside_recompute_correctly() -> None:
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(TwoStreamBlock(16) for _ in range(3))
    img0 = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(3))
    txt0 = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(4))

    def loss_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        img = img0.clone().requires_grad_(True)
        with torch.autograd.graph.allow_mutation_on_saved_tensors():
            h, t = img * 1.0, txt0.clone()
            for block in blocks:
                h, t = block(h, t)
            loss = h.pow(2).sum() + t.pow(2).sum()
            loss.backward()
        return loss.detach(), img.grad

    loss, grad = loss_and_grad()
    with recomputed_blocks(list(blocks)):
        loss_rc, grad_rc = loss_and_grad()
        loss_again, grad_again = loss_and_grad()
    assert torch.allclose(loss, loss_rc, rtol=0, atol=1e-5)
    assert (grad - grad_rc).abs().max() <= 1e-6
    assert (grad - grad_again).abs().max() <= 1e-6
    assert grad.abs().max() > 1e-3  # the gradient is not trivially zero
