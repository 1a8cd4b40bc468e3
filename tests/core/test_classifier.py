"""Tests for l2s_core.classifier: the published architecture, its state-dict layout and its forward semantics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from l2s_core.classifier import (
    FAMILY_CLASSIFIER_DEFAULTS,
    ClassifierConfig,
    ExtractorConfig,
    HeadConfig,
    RelationClassifier,
)

TINY = ClassifierConfig(
    input_channels=6,
    num_relations=5,
    num_timesteps=3,
    extractor=ExtractorConfig(nhead=2, num_layers=2, dim_feedforward=16, layer_attn_nheads=2),
    head=HeadConfig(nhead=2, num_layers=1, dim_feedforward=8, timestep_embedding_dim=4),
    map_size=4,
    d_model=8,
)


def _tiny(seed: int = 0, config: ClassifierConfig = TINY) -> RelationClassifier:
    torch.manual_seed(seed)
    return RelationClassifier(config).eval()


def _maps(b: int = 2, c: int = 5, s: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 2, c, s, s, generator=g)


# ---------------------------------------------------------------------------------------- published architecture


@pytest.mark.parametrize(
    ("family", "num_timesteps", "expected"),
    [("sd14", 50, 1_964_581), ("sd2", 50, 1_964_581), ("flux_schnell", 4, 4_848_453), ("flux_dev", 50, 4_860_965)],
)
def test_parameter_counts_match_published(family: str, num_timesteps: int, expected: int) -> None:
    cfg = FAMILY_CLASSIFIER_DEFAULTS[family]
    assert cfg.num_timesteps == num_timesteps and cfg.num_relations == 5
    model = RelationClassifier(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected  # buffers (pe) excluded, as in the paper's count


def _layer_keys(prefix: str, ff: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}self_attn.in_proj_weight": (768, 256),
        f"{prefix}self_attn.in_proj_bias": (768,),
        f"{prefix}self_attn.out_proj.weight": (256, 256),
        f"{prefix}self_attn.out_proj.bias": (256,),
        f"{prefix}linear1.weight": (ff, 256),
        f"{prefix}linear1.bias": (ff,),
        f"{prefix}linear2.weight": (256, ff),
        f"{prefix}linear2.bias": (256,),
        f"{prefix}norm1.weight": (256,),
        f"{prefix}norm1.bias": (256,),
        f"{prefix}norm2.weight": (256,),
        f"{prefix}norm2.bias": (256,),
    }


@pytest.mark.parametrize(("family", "layers", "ff", "steps"), [("sd2", 2, 128, 50), ("flux_schnell", 4, 512, 4)])
def test_state_dict_keys_and_shapes(family: str, layers: int, ff: int, steps: int) -> None:
    expected: dict[str, tuple[int, ...]] = {
        "object_extractor.query_vector": (1, 1, 256),
        "object_extractor.input_projection.weight": (256, 256),
        "object_extractor.input_projection.bias": (256,),
        "object_extractor.timestep_embedding.weight": (steps, 256),
        "object_extractor.positional_encoding.pe": (1, 1368, 256),
        "object_extractor.layer_attention.in_proj_weight": (768, 256),
        "object_extractor.layer_attention.in_proj_bias": (768,),
        "object_extractor.layer_attention.out_proj.weight": (256, 256),
        "object_extractor.layer_attention.out_proj.bias": (256,),
        "object_extractor.output_projection.weight": (256, 256),
        "object_extractor.output_projection.bias": (256,),
        "relation_classifier.timestep_embedding.weight": (steps, 16),
        "relation_classifier.positional_encoding.pe": (1, 256, 256),
        "relation_classifier.projection.weight": (256, 512),
        "relation_classifier.projection.bias": (256,),
        "relation_classifier.fc.0.weight": (256, 272),
        "relation_classifier.fc.0.bias": (256,),
        "relation_classifier.fc.1.weight": (256,),
        "relation_classifier.fc.1.bias": (256,),
        "relation_classifier.fc.4.weight": (128, 256),
        "relation_classifier.fc.4.bias": (128,),
        "relation_classifier.fc.5.weight": (128,),
        "relation_classifier.fc.5.bias": (128,),
        "relation_classifier.fc.8.weight": (5, 128),
        "relation_classifier.fc.8.bias": (5,),
    }
    for k in range(layers):
        expected |= _layer_keys(f"object_extractor.transformer.layers.{k}.", ff)
        expected |= _layer_keys(f"relation_classifier.transformer.layers.{k}.", ff)
    found = {k: tuple(v.shape) for k, v in RelationClassifier(FAMILY_CLASSIFIER_DEFAULTS[family]).state_dict().items()}
    assert found == expected


def test_positional_table_is_sinusoidal() -> None:
    pe = RelationClassifier(TINY).object_extractor.positional_encoding.pe  # (1, 6, 8)
    assert pe.shape == (1, 6, 8)
    assert pe[0, 0, 0] == 0.0 and pe[0, 0, 1] == 1.0
    assert pe[0, 3, 0].item() == pytest.approx(math.sin(3.0), abs=1e-6)
    assert pe[0, 3, 1].item() == pytest.approx(math.cos(3.0), abs=1e-6)
    assert pe[0, 5, 2].item() == pytest.approx(math.sin(5 / 10000 ** (2 / 8)), abs=1e-6)
    assert pe[0, 5, 7].item() == pytest.approx(math.cos(5 / 10000 ** (6 / 8)), abs=1e-6)


# ----------------------------------------------------------------------- forward against a hand-written reference


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, lq, d = q.shape
    split = lambda x: x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731  (B, h, L, d/h)
    w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    return (w @ split(v)).transpose(1, 2).reshape(b, lq, d)


def _mha(sd: dict, p: str, query: torch.Tensor, x: torch.Tensor, heads: int) -> torch.Tensor:
    wq, wk, wv = sd[p + "in_proj_weight"].chunk(3)
    bq, bk, bv = sd[p + "in_proj_bias"].chunk(3)
    out = _attend(F.linear(query, wq, bq), F.linear(x, wk, bk), F.linear(x, wv, bv), heads)
    return F.linear(out, sd[p + "out_proj.weight"], sd[p + "out_proj.bias"])


def _prenorm_layer(sd: dict, p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    ln = lambda v, n: F.layer_norm(v, v.shape[-1:], sd[p + n + ".weight"], sd[p + n + ".bias"])  # noqa: E731
    h = ln(x, "norm1")
    x = x + _mha(sd, p + "self_attn.", h, h, heads)
    h = F.relu(F.linear(ln(x, "norm2"), sd[p + "linear1.weight"], sd[p + "linear1.bias"]))
    return x + F.linear(h, sd[p + "linear2.weight"], sd[p + "linear2.bias"])


def _reference(model: RelationClassifier, maps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The published forward pass written out with functional ops."""
    cfg, sd = model.config, model.state_dict()
    b, _, c, s, _ = maps.shape
    e, r = "object_extractor.", "relation_classifier."
    pooled = []
    for obj in range(2):
        x = F.linear(
            maps[:, obj].reshape(b, c, s * s), sd[e + "input_projection.weight"], sd[e + "input_projection.bias"]
        )
        x = x + sd[e + "positional_encoding.pe"][:, :c]
        te = sd[e + "timestep_embedding.weight"][t][:, None]
        if cfg.extractor.timestep_mode == "pre":
            x = x + te
        for k in range(cfg.extractor.num_layers):
            x = x + te if cfg.extractor.timestep_mode == "mid" else x
            x = _prenorm_layer(sd, f"{e}transformer.layers.{k}.", x, cfg.extractor.nhead)
        q = sd[e + "query_vector"].expand(b, 1, -1)
        out = _mha(sd, e + "layer_attention.", q, x, cfg.extractor.layer_attn_nheads)[:, 0]
        pooled.append(F.linear(out, sd[e + "output_projection.weight"], sd[e + "output_projection.bias"]))
    x = F.linear(torch.cat(pooled, 1), sd[r + "projection.weight"], sd[r + "projection.bias"])[:, None]
    x = x + sd[r + "positional_encoding.pe"][:, :1]
    for k in range(cfg.head.num_layers):
        x = _prenorm_layer(sd, f"{r}transformer.layers.{k}.", x, cfg.head.nhead)
    x = torch.cat([x[:, 0], sd[r + "timestep_embedding.weight"][t]], 1)
    for i in (0, 4):
        x = F.linear(x, sd[f"{r}fc.{i}.weight"], sd[f"{r}fc.{i}.bias"])
        x = F.leaky_relu(F.layer_norm(x, x.shape[-1:], sd[f"{r}fc.{i + 1}.weight"], sd[f"{r}fc.{i + 1}.bias"]), 0.1)
    return F.linear(x, sd[f"{r}fc.8.weight"], sd[f"{r}fc.8.bias"])


@pytest.mark.parametrize("mode", ["mid", "pre"])
def test_forward_matches_reference(mode: str) -> None:
    config = replace(TINY, extractor=replace(TINY.extractor, timestep_mode=mode))
    model, maps, t = _tiny(config=config), _maps(), torch.tensor([0, 2])
    with torch.no_grad():
        got = model(maps, t)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, _reference(model, maps, t), rtol=1e-5, atol=1e-5)


def test_mid_and_pre_injection_differ() -> None:
    maps, t = _maps(), torch.tensor([1, 2])
    pre = replace(TINY, extractor=replace(TINY.extractor, timestep_mode="pre"))
    with torch.no_grad():
        assert not torch.allclose(_tiny(config=TINY)(maps, t), _tiny(config=pre)(maps, t))


def test_logits_depend_on_step_and_object_order() -> None:
    model, maps = _tiny(), _maps()
    with torch.no_grad():
        base = model(maps, torch.tensor([0, 0]))
        assert not torch.allclose(base, model(maps, torch.tensor([1, 1])))
        assert not torch.allclose(base, model(maps.flip(1), torch.tensor([0, 0])))


@pytest.mark.parametrize(
    "step",
    [torch.tensor([2, 1]), torch.tensor([[2.0], [1.0]]), torch.tensor([2.0, 1.0]), torch.tensor([[2], [1]])],
)
def test_step_index_shapes_and_dtypes_agree(step: torch.Tensor) -> None:
    model, maps = _tiny(), _maps()
    with torch.no_grad():
        assert torch.equal(model(maps, step), model(maps, torch.tensor([2, 1])))


def test_scalar_step_index_broadcasts() -> None:
    model, maps = _tiny(), _maps()
    with torch.no_grad():
        assert torch.equal(model(maps, 1), model(maps, torch.tensor([1, 1])))


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (torch.tensor([0, 3]), r"\[0, 3\).*found \[0, 3\]"),
        (torch.tensor([-1, 0]), r"\[0, 3\)"),
        (torch.tensor([0.5, 1.0]), "whole numbers"),
        (torch.tensor([0, 1, 2]), r"shape \(2,\) or \(2, 1\)"),
    ],
)
def test_bad_step_index_is_rejected(step: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny()(_maps(), step)


@pytest.mark.parametrize(
    ("maps", "match"),
    [
        (torch.rand(2, 5, 4, 4), r"\(B, 2, C, 4, 4\)"),
        (torch.rand(2, 3, 5, 4, 4), r"found \(2, 3, 5, 4, 4\)"),
        (torch.rand(2, 2, 5, 8, 8), r"found \(2, 2, 5, 8, 8\)"),
        (torch.rand(2, 2, 7, 4, 4), "at most 6 channels, the maps have 7"),
    ],
)
def test_bad_maps_are_rejected(maps: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _tiny()(maps, torch.tensor([0, 0]))


def test_eval_is_deterministic_and_train_is_not() -> None:
    model, maps, t = _tiny(), _maps(), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(model(maps, t), model(maps, t))
        model.train()
        torch.manual_seed(0)
        a = model(maps, t)
        assert not torch.equal(a, model(maps, t))  # dropout is active in training mode only


def test_gradient_reaches_both_objects_maps_in_eval() -> None:
    model = _tiny().requires_grad_(False)
    maps = _maps().requires_grad_(True)
    F.cross_entropy(model(maps, torch.tensor([0, 2])), torch.tensor([1, 3])).backward()
    assert maps.grad is not None and maps.grad.shape == maps.shape
    assert maps.grad[:, 0].abs().sum() > 0 and maps.grad[:, 1].abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_low_precision_maps_are_accepted() -> None:
    model, maps, t = _tiny(), _maps(), torch.tensor([0, 1])
    with torch.no_grad():
        out = model(maps.to(torch.bfloat16), t)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(maps.to(torch.bfloat16).float(), t))


# ------------------------------------------------------------------------------------------------- official config


def test_official_config_round_trip() -> None:
    for family, cfg in FAMILY_CLASSIFIER_DEFAULTS.items():
        official = cfg.to_official()
        assert official["extractor"]["timestep_embedding"] == {"enable": True, "mode": "mid"}
        assert official["architecture"] == "attention"
        assert ClassifierConfig.from_official(official, cfg.input_channels, cfg.num_relations) == cfg, family


def test_from_official_uses_family_defaults_only_for_missing_keys() -> None:
    official = FAMILY_CLASSIFIER_DEFAULTS["flux_dev"].to_official()
    del official["extractor"]["nhead"], official["extractor"]["layer_attn_nheads"], official["classifier"]["nhead"]
    official["classifier"]["dropout"] = 0.5
    with pytest.raises(ValueError, match=r"lacks 'extractor.nhead'.*family=None"):
        ClassifierConfig.from_official(official, 1368, 5)
    cfg = ClassifierConfig.from_official(official, 1368, 5, family="flux_dev")
    assert (cfg.extractor.nhead, cfg.extractor.layer_attn_nheads, cfg.head.nhead) == (4, 4, 8)
    assert cfg.head.dropout == 0.5


def test_from_official_rejects_unsupported_variants_and_families() -> None:
    official = FAMILY_CLASSIFIER_DEFAULTS["sd2"].to_official()
    with pytest.raises(ValueError, match="No published classifier defaults for family 'sd15'"):
        ClassifierConfig.from_official(official, 1368, 5, family="sd15")
    official["extractor"]["timestep_embedding"] = {"enable": True, "mode": "post"}
    with pytest.raises(ValueError, match="Unknown extractor timestep_mode 'post'"):
        ClassifierConfig.from_official(official, 1368, 5)
    official["extractor"]["timestep_embedding"] = {"enable": False, "mode": "mid"}
    with pytest.raises(ValueError, match="enable=False is not supported"):
        ClassifierConfig.from_official(official, 1368, 5)
    with pytest.raises(ValueError, match="positive divisor of d_model=8"):
        replace(TINY, head=replace(TINY.head, nhead=3))
