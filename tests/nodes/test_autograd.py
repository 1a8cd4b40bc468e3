"""Tests for nodes/autograd.py: gradients through weights created under ComfyUI's ``torch.inference_mode()``.

No ComfyUI is needed: a small module built inside ``torch.inference_mode()`` has inference-tensor weights exactly like
a model loaded by a ComfyUI loader node.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from devtools.pack_loader import load_pack_module

autograd_module = load_pack_module("nodes.autograd")
autograd_weights = autograd_module.autograd_weights
gradient_mode = autograd_module.gradient_mode


class _Scaled(torch.nn.Module):
    """Multiplies by a registered buffer, so a buffer takes part in the forward."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 1.5, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _make_model(inference: bool) -> torch.nn.Sequential:
    torch.manual_seed(0)
    with torch.inference_mode(inference):
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), _Scaled(3))


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _input_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    (model(x) * torch.arange(6.0).reshape(2, 3)).sum().backward()  # weights (B, 3)
    assert x.grad is not None
    return x.grad


def test_inference_weights_break_gradients_without_the_adapter() -> None:
    model = _make_model(inference=True)
    assert all(t.is_inference() for t in _tensors(model).values())
    x = torch.randn(2, 4, requires_grad=True)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        _input_grad(model, x)


def test_autograd_weights_enables_gradients_and_restores_inference_tensors() -> None:
    model = _make_model(inference=True)
    reference = _make_model(inference=False)  # same seed: same values, normal tensors
    before = {name: t.detach().clone() for name, t in _tensors(model).items()}  # normal copies of the values
    assert all(torch.equal(before[name], t) for name, t in _tensors(reference).items())
    x = torch.randn(2, 4, requires_grad=True)

    with torch.inference_mode():  # ComfyUI runs every prompt in inference mode
        with autograd_weights(model) as converted:
            inside = _tensors(model)
            assert converted == len(inside) == 5  # Linear weight + bias, LayerNorm weight + bias, one buffer
            assert not any(t.is_inference() for t in inside.values())
            assert not any(p.requires_grad for p in model.parameters())
            assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
            assert all(torch.equal(before[name], t) for name, t in inside.items())
            with gradient_mode():
                grad = _input_grad(model, x)

    expected = _input_grad(reference, x.detach().clone().requires_grad_(True))
    assert grad.abs().sum() > 0
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    after = _tensors(model)
    assert set(after) == set(before)
    assert all(t.is_inference() for t in after.values())
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
    assert all(torch.equal(before[name], t) for name, t in after.items())


def test_normal_weights_yield_zero_and_stay_untouched() -> None:
    model = _make_model(inference=False)
    originals = _tensors(model)
    with autograd_weights(model) as converted:
        assert converted == 0
        assert all(t is originals[name] for name, t in _tensors(model).items())
    assert all(t is originals[name] for name, t in _tensors(model).items())


def test_weights_are_restored_when_the_body_raises() -> None:
    model = _make_model(inference=True)
    before = {name: t.detach().clone() for name, t in _tensors(model).items()}
    with pytest.raises(KeyError, match="boom"), autograd_weights(model) as converted:
        assert converted == 5
        assert not any(t.is_inference() for t in _tensors(model).values())
        raise KeyError("boom")
    after = _tensors(model)
    assert all(t.is_inference() for t in after.values())
    assert all(torch.equal(before[name], t) for name, t in after.items())


def _mutating_forward(x: torch.Tensor) -> torch.Tensor:
    """y = layer_norm(x); z = y**2 saves y for backward; then y += 1 updates y in place (as FLUX blocks do)."""
    y = F.layer_norm(x, (x.shape[-1],))
    z = y.pow(2)
    y += 1
    return (z + y).sum()


def test_gradient_mode_tolerates_in_place_update_of_saved_tensor() -> None:
    x = torch.randn(2, 4)
    with torch.enable_grad(), pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _mutating_forward(x.clone().requires_grad_(True)).backward()

    leaf = x.clone().requires_grad_(True)
    with torch.inference_mode():  # ComfyUI's global mode
        with gradient_mode():
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            _mutating_forward(leaf).backward()
    assert leaf.grad is not None

    # Reference without the in-place update: d/dy of (y**2 + y + 1) is 2y + 1 with y the value BEFORE the update.
    ref = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = F.layer_norm(ref, (4,))
        (y.pow(2) + y + 1).sum().backward()
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-6, atol=1e-6)


def test_requires_grad_flags_come_back_and_are_off_inside() -> None:
    model = _make_model(inference=True)
    with torch.inference_mode():
        model[0].bias.requires_grad_(False)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    assert before["0.weight"] and not before["0.bias"]
    with autograd_weights(model):
        assert not any(p.requires_grad for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before


def test_tied_weights_stay_tied() -> None:
    with torch.inference_mode():
        first, second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
        second.weight = first.weight
        model = torch.nn.Sequential(first, second)
    x = torch.randn(2, 3, requires_grad=True)
    with autograd_weights(model), gradient_mode():
        assert model[0].weight is model[1].weight
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert model[0].weight is model[1].weight and model[0].weight.is_inference()


class _TaggedTensor(torch.Tensor):
    """Like ComfyUI-GGUF's GGMLTensor: a torch-function subclass with required keyword-only constructor arguments
    whose ``clone``/``detach`` return the tensor itself."""

    def __new__(cls, data: torch.Tensor, *, tensor_type: str) -> _TaggedTensor:
        return super().__new__(cls, data)

    def __init__(self, data: torch.Tensor, *, tensor_type: str) -> None:
        super().__init__()
        self.tensor_type = tensor_type

    def clone(self, *args: object, **kwargs: object) -> _TaggedTensor:
        return self

    def detach(self, *args: object, **kwargs: object) -> _TaggedTensor:
        return self


class _TaggedLinear(torch.nn.Linear):
    """Casts its weight per forward and unwraps the subclass with ``torch.Tensor(...)``, as GGUF's layers do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        if isinstance(weight, _TaggedTensor):
            weight = torch.Tensor(weight)
        return F.linear(x, weight, self.bias)


def _tagged_model() -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.inference_mode():
        layer = _TaggedLinear(4, 3)
        layer.weight = torch.nn.Parameter(_TaggedTensor(layer.weight.detach(), tensor_type="F32"), requires_grad=False)
    return layer


def test_gradient_mode_keeps_tensor_subclass_weights_working() -> None:
    """GGUF-style weights: under allow_mutation_on_saved_tensors alone ``torch.Tensor(result)`` builds the subclass
    without its arguments; gradient_mode(model) gives the plain result. The weight is copied out of inference mode
    although its clone() returns itself, keeps its class and attributes, and the gradient is the plain-weight one."""
    model = _tagged_model()
    assert isinstance(model.weight, _TaggedTensor) and model.weight.is_inference()
    x = torch.randn(2, 4)
    with torch.inference_mode(False), torch.enable_grad(), torch.autograd.graph.allow_mutation_on_saved_tensors():
        with pytest.raises(TypeError, match="tensor_type"):
            model(x.clone().requires_grad_(True))

    leaf = x.clone().requires_grad_(True)
    with torch.inference_mode(), autograd_weights(model) as converted, gradient_mode(model):
        assert converted == 2  # the subclass weight (its clone() is itself) is copied all the same, and the bias
        assert isinstance(model.weight, _TaggedTensor) and not model.weight.is_inference()
        assert model.weight.tensor_type == "F32"
        (grad,) = torch.autograd.grad(model(leaf).pow(2).sum(), leaf)
    reference = x.clone().requires_grad_(True)
    plain_weight = model.weight.as_subclass(torch.Tensor).detach().clone()
    (expected,) = torch.autograd.grad(F.linear(reference, plain_weight, model.bias.detach()).pow(2).sum(), reference)
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert isinstance(model.weight, _TaggedTensor) and model.weight.is_inference()
    assert model.weight.tensor_type == "F32"
