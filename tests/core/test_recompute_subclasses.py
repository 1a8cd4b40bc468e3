"""Per-block recomputation with weights held in a tensor subclass (as ComfyUI-GGUF holds its weights).

The recomputation runs a block on tensors of its own subclass (so that ``x += y`` rebinds instead of updating what
the backward reads). An operation that mixes those with another, unrelated subclass must still run: torch's default
handler would refuse it ("Multiple dispatch failed ... all __torch_function__ handlers returned NotImplemented").
"""

from __future__ import annotations

import torch

from l2s_core.recompute import recomputed_blocks


class _WeightTensor(torch.Tensor):
    """A tensor subclass with torch's default ``__torch_function__``, like ComfyUI-GGUF's ``GGMLTensor``."""


class _SubclassWeightBlock(torch.nn.Module):
    """Normalises its stream, updates it in place, normalises it again; its weight is a :class:`_WeightTensor`."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width, elementwise_affine=False)
        weight = torch.randn(width, width) * width ** -0.5
        self.weight = torch.nn.Parameter(weight.as_subclass(_WeightTensor), requires_grad=False)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` as a plain tensor (ComfyUI-GGUF unwraps its layers' outputs the same way)."""
        out = torch.nn.functional.linear(x, self.weight)
        return out.as_subclass(torch.Tensor) if isinstance(out, _WeightTensor) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x += self.linear(self.norm(x)).tanh()
        return x + self.linear(self.norm(x))


def test_recomputation_runs_operations_that_mix_in_other_tensor_subclasses() -> None:
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(_SubclassWeightBlock(8) for _ in range(3))
    assert all(isinstance(b.weight, _WeightTensor) for b in blocks)
    x0 = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))

    def loss_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        x = x0.clone().requires_grad_(True)
        with torch.autograd.graph.allow_mutation_on_saved_tensors():
            h = x * 1.0
            for block in blocks:
                h = block(h)
            loss = h.pow(2).sum()
            (grad,) = torch.autograd.grad(loss, x)
        return loss.detach(), grad

    loss, grad = loss_and_grad()
    with recomputed_blocks(list(blocks)):
        loss_rc, grad_rc = loss_and_grad()
    assert torch.allclose(loss, loss_rc, rtol=0, atol=1e-5)
    assert (grad - grad_rc).abs().max() <= 1e-6
    assert grad.abs().max() > 1e-3
