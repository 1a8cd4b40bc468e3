"""The memory account's device-independent parts: the live-bytes tracker, the attention kernel models, meta answers.

benchmarks/memory_account/ accounts full-size models on the meta device; these tests pin what its figures rest on:
known allocations give a known peak, on CPU and on meta alike.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.memory_account import attention as attention_models
from benchmarks.memory_account.meta_device import meta_answers
from benchmarks.memory_account.tracker import LiveBytes, storage_bytes

MIB = 1 << 20
DEVICES = ["cpu", "meta"]


def empty(nbytes: int, device: str) -> torch.Tensor:
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_peak_of_known_allocations(device: str) -> None:
    with LiveBytes(granularity=1) as tracker:
        a = empty(1 * MIB, device)
        b = empty(2 * MIB, device)
        assert tracker.current == 3 * MIB
        del a
        assert tracker.current == 2 * MIB
        c = empty(4 * MIB, device)
        assert (tracker.current, tracker.peak.total) == (6 * MIB, 6 * MIB)
        del b, c
        assert tracker.current == 0
        d = empty(5 * MIB, device)
        assert tracker.peak.total == 6 * MIB  # 5 MiB live now, never more than 6 at once
        del d
    assert tracker.allocations == 4


@pytest.mark.parametrize("device", DEVICES)
def test_views_inplace_and_existing_storages_are_not_allocations(device: str) -> None:
    weight = torch.zeros(256, 256, device=device)  # exists before: never counted
    with LiveBytes(granularity=1) as tracker:
        view = weight.t()[:10]
        weight.add_(1)
        x = torch.zeros(64, 256, device=device)  # 64 KiB
        y = x.view(256, 64).transpose(0, 1)
        x.mul_(2)
        assert tracker.current == 64 * 1024
        del view, y
    assert tracker.allocations == 1


def test_storages_are_rounded_to_the_granularity() -> None:
    with LiveBytes() as tracker:  # 512-byte blocks, as the CUDA caching allocator
        a = torch.zeros(1, dtype=torch.uint8)
        b = torch.zeros(513, dtype=torch.uint8)
        assert tracker.current == 512 + 1024
        del a, b


@pytest.mark.parametrize("device", DEVICES)
def test_what_autograd_keeps_stays_live_until_the_backward(device: str) -> None:
    w = torch.zeros(256, 256, device=device)
    x = torch.zeros(1024, 256, device=device, requires_grad=True)  # 1 MiB, created before
    with LiveBytes(granularity=1) as tracker:
        loss = (x @ w).relu().sum()  # relu keeps its 1 MiB output; the matmul output is freed
        assert tracker.current == MIB + 4
        (grad,) = torch.autograd.grad(loss, x)
        assert tracker.current == MIB + 4  # the gradient; the kept output is freed
        # during the backward: the kept output, the relu's input gradient, the loss and its seed gradient (4 B each)
        assert tracker.peak.total == 2 * MIB + 8
        del grad, loss
    assert tracker.current == 0


@pytest.mark.parametrize("device", DEVICES)
def test_composite_ops_show_their_temporaries_in_inference_mode(device: str) -> None:
    """SDPA's math path reaches the mode as one op without autograd; its (B, H, N, N) scores must still count."""
    q = torch.zeros(1, 2, 256, 8, device=device)
    with torch.inference_mode(), sdpa_kernel([SDPBackend.MATH]), LiveBytes(granularity=1) as tracker:
        out = F.scaled_dot_product_attention(q, q, q)
        t = q.transpose(-2, -1).contiguous()  # a composite op's result is released like any other
        del t
        assert tracker.current == out.numel() * 4
    assert tracker.peak.total >= 2 * 256 * 256 * 4  # the scores of both heads in fp32


def test_allocations_are_labelled() -> None:
    def classify(func: object, args: tuple[object, ...], kwargs: dict[str, object]) -> str | None:
        return "copies" if func is torch.ops.aten._to_copy.default else None

    w = torch.zeros(1024, dtype=torch.float16)
    with LiveBytes(granularity=1, classify=classify) as tracker:
        w32 = w.float()
        act = torch.zeros(1024)
        assert tracker.peak.by_category == {"copies": 4096, "activations": 4096}
        del w32, act


def test_storage_bytes_counts_shared_storages_once() -> None:
    a = torch.zeros(100)
    assert storage_bytes([a, a[:10], a.view(10, 10)]) == 400


# -- attention kernel models -------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_fused_attention_gives_sdpa_values_and_gradients(monkeypatch: pytest.MonkeyPatch, masked: bool) -> None:
    monkeypatch.setattr(attention_models, "BLOCK_ELEMENTS", 1000)  # several query blocks
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, d, generator=gen, dtype=torch.float64, requires_grad=True)
               for n, d in ((50, 8), (40, 8), (40, 6)))
    mask = (torch.rand(2, 1, 50, 40, generator=gen) > 0.2) if masked else None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    for function in (attention_models.fused_sdpa, attention_models.math_sdpa):
        got = function(q, k, v, attn_mask=mask)
        upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
        for a, b in zip(torch.autograd.grad(got, (q, k, v), upstream),
                        torch.autograd.grad(expected, (q, k, v), upstream, retain_graph=True), strict=True):
            assert (a - b).abs().max() < 1e-5
        assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_fused_attention_keeps_only_what_flash_attention_keeps(device: str) -> None:
    b, h, n, m, d = 2, 4, 64, 32, 16
    q = torch.zeros(b, h, n, d, device=device, dtype=torch.float16, requires_grad=True)
    k = torch.zeros(b, h, m, d, device=device, dtype=torch.float16, requires_grad=True)
    v = torch.zeros(b, h, m, d, device=device, dtype=torch.float16, requires_grad=True)
    out_bytes, lse_bytes = b * h * n * d * 2, b * h * n * 4
    with LiveBytes(granularity=1) as tracker:
        out = attention_models.fused_sdpa(q, k, v)
        assert tracker.current == out_bytes + lse_bytes  # the output and the fp32 log-sum-exp, nothing else
        assert tracker.peak.total == out_bytes + lse_bytes
        grads = torch.autograd.grad(out.float().sum(), (q, k, v))
        grad_bytes = sum(g.numel() * 2 for g in grads)
        # during the backward: dq, dk, dv, the fp32 dq accumulator and row term, beside what the forward kept
        assert tracker.peak.total >= grad_bytes + b * h * n * d * 4 + lse_bytes
        del out, grads


# -- meta-device answers -----------------------------------------------------------------------------------------


def test_meta_tensors_answer_value_questions_with_zero() -> None:
    with meta_answers() as answers:
        assert bool(torch.ones(3, device="meta").any()) is False
        assert torch.ones((), device="meta").item() == 0.0
    assert answers.answered == 2
    assert bool(torch.ones(3).any()) is True  # real tensors untouched


def test_saved_tensor_mutation_works_on_meta() -> None:
    """allow_mutation_on_saved_tensors (the pack's gradient_mode) tells meta tensors apart by storage."""
    x = torch.zeros(8, 16, device="meta", requires_grad=True)
    target = torch.zeros(8, dtype=torch.long, device="meta")
    with meta_answers(), torch.autograd.graph.allow_mutation_on_saved_tensors():
        for _ in range(3):
            h = x * 2
            y = torch.sigmoid(h)
            h.add_(1)  # h is saved by nothing; y by sigmoid: mutate a saved one too
            y.mul_(1)
            loss = F.cross_entropy(y, target)
            (grad,) = torch.autograd.grad(loss, x)
            assert grad.shape == x.shape
