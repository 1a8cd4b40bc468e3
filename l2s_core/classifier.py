"""The relation classifier: the published Learn-to-Steer architecture and its configuration.

This module owns the network that maps two objects' attention maps to relation logits, and the frozen configs that
describe it. Module and parameter names reproduce the official state-dict keys exactly, so the
official checkpoints load unchanged; reading and writing checkpoint files is :mod:`.checkpoint`'s job.

Structure (for maps ``(B, 2, C, S, S)`` and step indices ``(B,)``)::

    object_extractor      shared by both objects: C layer-head maps -> C tokens -> encoder -> attention pooling
                          -> one aggregated (S, S) map per object
    relation_classifier   both aggregated maps -> one token -> encoder -> [+ step embedding] -> MLP -> (B, R) logits
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from .families import PUBLISHED_FAMILIES, get_family
from .fields import require_int, require_mapping, require_number, require_str

TIMESTEP_MODES: tuple[str, ...] = ("mid", "pre")
"""Supported ways of injecting the step embedding into the extractor: before every encoder layer, or once."""

OFFICIAL_INPUT_CHANNELS = 1368
"""Length of the extractor's positional table in every official checkpoint (train.py hard-codes 57*24)."""

HEAD_PE_LENGTH = 256
"""Length of the relation head's positional table (the official default ``max_len``)."""


@dataclass(frozen=True)
class ExtractorConfig:
    """Settings of ``object_extractor`` (the official ``config["extractor"]`` section).

    Attributes:
        nhead: attention heads of each encoder layer (not readable from weights).
        num_layers: encoder layers.
        dim_feedforward: hidden width of each layer's feed-forward block.
        layer_attn_nheads: heads of the attention pooling (not readable from weights).
        dropout: dropout of the encoder layers (training only; the published value is not documented).
        timestep_mode: "mid" adds the step embedding before every encoder layer (all published configs); "pre" adds
            it once before the encoder.
    """

    nhead: int
    num_layers: int
    dim_feedforward: int
    layer_attn_nheads: int
    dropout: float = 0.1
    timestep_mode: str = "mid"


@dataclass(frozen=True)
class HeadConfig:
    """Settings of ``relation_classifier`` (the official ``config["classifier"]`` section).

    Attributes:
        nhead: attention heads of each encoder layer.
        num_layers: encoder layers.
        dim_feedforward: hidden width of each layer's feed-forward block.
        dropout: dropout of the encoder layers and the MLP head.
        timestep_embedding_dim: width of the step embedding concatenated before the MLP (0 disables it).
        mode: stored official label ("multiclass"); has no effect on the layers.
        fc_ver: stored official label ("v1"); has no effect on the layers.
    """

    nhead: int
    num_layers: int
    dim_feedforward: int
    dropout: float = 0.3
    timestep_embedding_dim: int = 16
    mode: str = "multiclass"
    fc_ver: str = "v1"


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to build a :class:`RelationClassifier`.

    Attributes:
        input_channels: length of the extractor's positional table, i.e. the most channels C the model accepts (the
            official checkpoints use 1368 for every family; the real C of a family is checkpoint metadata).
        num_relations: number of relation classes R.
        num_timesteps: size of both step-index embeddings.
        map_size: side S of the square input maps.
        d_model: token width.
        extractor: object extractor settings.
        head: relation head settings.
    """

    input_channels: int
    num_relations: int
    num_timesteps: int
    extractor: ExtractorConfig
    head: HeadConfig
    map_size: int = 16
    d_model: int = 256

    def __post_init__(self) -> None:
        for name in ("input_channels", "num_relations", "num_timesteps", "map_size", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ClassifierConfig.{name} must be a positive int, found {value!r}.")
        if self.d_model % 2:
            raise ValueError(f"ClassifierConfig.d_model must be even (sinusoidal table), found {self.d_model}.")
        if self.extractor.timestep_mode not in TIMESTEP_MODES:
            raise ValueError(
                f"Unknown extractor timestep_mode {self.extractor.timestep_mode!r}; expected one of {TIMESTEP_MODES}."
            )
        for label, n_heads in (
            ("extractor.nhead", self.extractor.nhead),
            ("extractor.layer_attn_nheads", self.extractor.layer_attn_nheads),
            ("classifier.nhead", self.head.nhead),
        ):
            if n_heads < 1 or self.d_model % n_heads:
                raise ValueError(f"{label}={n_heads} must be a positive divisor of d_model={self.d_model}.")

    @classmethod
    def from_official(
        cls,
        config: Mapping[str, Any],
        input_channels: int,
        num_relations: int,
        family: str | None = None,
    ) -> ClassifierConfig:
        """Build a config from an official checkpoint's ``config`` dict.

        Keys missing from ``config`` are taken from ``FAMILY_CLASSIFIER_DEFAULTS[family]`` when a family is given.
        The head counts and the injection mode cannot be read from weights, so they must come from one of the two.

        Args:
            config: the official ``config`` dict (``extractor``, ``classifier``, ``map_size``, ``d_model``, ...).
            input_channels: length of the extractor's positional table (official key ``input_channels``).
            num_relations: number of relation classes.
            family: model family whose published defaults fill missing keys, or None for no fallback.

        Raises:
            ValueError: a key is missing with no default, a value has the wrong type or range (the message names
                the field, e.g. ``config.extractor.nhead``, and what was found), or the config describes an
                unsupported variant.
        """
        config = require_mapping(config, "config", expected="a dict (the official 'config' section)")
        defaults: dict[str, Any] = {}
        if family is not None:
            if family not in FAMILY_CLASSIFIER_DEFAULTS:
                raise ValueError(
                    f"No published classifier defaults for family {family!r}; known: "
                    f"{sorted(FAMILY_CLASSIFIER_DEFAULTS)}. Pass a complete config instead."
                )
            defaults = FAMILY_CLASSIFIER_DEFAULTS[family].to_official()

        def section(name: str) -> Mapping[str, Any]:
            value = config.get(name)
            return {} if value is None else require_mapping(value, f"config.{name}")

        def get(name: str | None, key: str) -> Any:
            src = config if name is None else section(name)
            dflt = defaults if name is None else defaults.get(name, {})
            if key in src:
                return src[key]
            if key in dflt:
                return dflt[key]
            where = key if name is None else f"{name}.{key}"
            raise ValueError(
                f"The classifier config lacks {where!r} and no family default is available "
                f"(family={family!r}). Add the key or pass one of {sorted(FAMILY_CLASSIFIER_DEFAULTS)} as family."
            )

        def count(name: str | None, key: str) -> int:
            return require_int(get(name, key), f"config.{key}" if name is None else f"config.{name}.{key}", minimum=1)

        def rate(name: str, key: str) -> float:
            return require_number(get(name, key), f"config.{name}.{key}", minimum=0.0)

        def label(name: str, key: str) -> str:
            return require_str(get(name, key), f"config.{name}.{key}")

        extractor_section = section("extractor")
        ts = extractor_section.get("timestep_embedding") or defaults.get("extractor", {}).get("timestep_embedding")
        if not isinstance(ts, Mapping):
            raise ValueError(
                "The classifier config lacks 'extractor.timestep_embedding' ({'enable': True, 'mode': 'mid'|'pre'}) "
                f"and no family default is available (family={family!r}); found {ts!r}."
            )
        if not ts.get("enable", True):
            raise ValueError(
                "extractor.timestep_embedding.enable=False is not supported (no published checkpoint uses it); "
                "expected enable=True with mode 'mid' or 'pre'."
            )
        if extractor_section.get("use_mean", False):
            raise ValueError("extractor.use_mean=True is not supported (no published checkpoint uses it).")
        extractor = ExtractorConfig(
            nhead=count("extractor", "nhead"),
            num_layers=count("extractor", "num_layers"),
            dim_feedforward=count("extractor", "dim_feedforward"),
            layer_attn_nheads=count("extractor", "layer_attn_nheads"),
            dropout=rate("extractor", "dropout"),
            timestep_mode=require_str(ts.get("mode", "mid"), "config.extractor.timestep_embedding.mode"),
        )
        head = HeadConfig(
            nhead=count("classifier", "nhead"),
            num_layers=count("classifier", "num_layers"),
            dim_feedforward=count("classifier", "dim_feedforward"),
            dropout=rate("classifier", "dropout"),
            timestep_embedding_dim=require_int(get("classifier", "timestep_embedding_dim"),
                                               "config.classifier.timestep_embedding_dim", minimum=0),
            mode=label("classifier", "mode"),
            fc_ver=label("classifier", "fc_ver"),
        )
        return cls(
            input_channels=require_int(input_channels, "input_channels", minimum=1),
            num_relations=require_int(num_relations, "the number of relations", minimum=1),
            num_timesteps=count(None, "num_timesteps"),
            extractor=extractor,
            head=head,
            map_size=count(None, "map_size"),
            d_model=count(None, "d_model"),
        )

    def to_official(self) -> dict[str, Any]:
        """Return the official ``config`` dict layout; ``input_channels`` and R are stored beside it."""
        e, h = self.extractor, self.head
        return {
            "extractor": {
                "nhead": e.nhead,
                "num_layers": e.num_layers,
                "dim_feedforward": e.dim_feedforward,
                "layer_attn_nheads": e.layer_attn_nheads,
                "dropout": e.dropout,
                "timestep_embedding": {"enable": True, "mode": e.timestep_mode},
            },
            "classifier": {
                "mode": h.mode,
                "timestep_embedding_dim": h.timestep_embedding_dim,
                "nhead": h.nhead,
                "num_layers": h.num_layers,
                "dim_feedforward": h.dim_feedforward,
                "fc_ver": h.fc_ver,
                "dropout": h.dropout,
            },
            "map_size": self.map_size,
            "d_model": self.d_model,
            "num_timesteps": self.num_timesteps,
            "architecture": "attention",
        }


def published_config(family: str) -> ClassifierConfig:
    """The published classifier architecture a family trains (its own, or the one its training recipe borrows).

    The size ("small": SD, "large": FLUX) and the step-embedding length come from the family table
    (:meth:`.families.ModelFamily.training_recipe`).

    Raises:
        ValueError: unknown family.
    """
    recipe = get_family(family).training_recipe()
    small = recipe.classifier_size == "small"
    extractor = ExtractorConfig(2, 2, 128, 2) if small else ExtractorConfig(4, 4, 512, 4)
    head = HeadConfig(4, 2, 128) if small else HeadConfig(8, 4, 512)
    return ClassifierConfig(OFFICIAL_INPUT_CHANNELS, 5, recipe.num_steps, extractor, head)


FAMILY_CLASSIFIER_DEFAULTS: Mapping[str, ClassifierConfig] = MappingProxyType(
    {name: published_config(name) for name in PUBLISHED_FAMILIES}
)
"""Published classifier settings of each published family, used where a checkpoint's config lacks a key."""


class SinusoidalPositionalEncoding(nn.Module):
    """Adds a fixed sinusoidal table (persistent buffer ``pe`` of shape (1, max_len, d_model)) to a token sequence."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0))  # (1, max_len, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Add positions 0..L-1 to ``x`` of shape (B, L, d_model)."""
        return x + self.pe[:, : x.shape[1]]


def _encoder(d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, nhead, dim_feedforward, dropout, activation="relu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)


class ObjectMapExtractor(nn.Module):
    """Aggregates one object's C layer-head maps into a single map (official ``CrossAttentionExtractor``)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        cfg, d = config.extractor, config.d_model
        self.mode = cfg.timestep_mode
        self.query_vector = nn.Parameter(torch.randn(1, 1, d))
        self.input_projection = nn.Linear(config.map_size**2, d)
        self.timestep_embedding = nn.Embedding(config.num_timesteps, d)
        self.positional_encoding = SinusoidalPositionalEncoding(d, config.input_channels)
        self.transformer = _encoder(d, cfg.nhead, cfg.num_layers, cfg.dim_feedforward, cfg.dropout)
        self.layer_attention = nn.MultiheadAttention(d, cfg.layer_attn_nheads, batch_first=True)
        self.output_projection = nn.Linear(d, config.map_size**2)

    def forward(self, maps: Tensor, step_index: Tensor) -> Tensor:
        """Map (N, C, S, S) maps and (N,) long step indices to (N, S, S) aggregated maps."""
        n, c, h, w = maps.shape
        x = self.input_projection(maps.reshape(n, c, h * w))  # (N, C, H*W) -> (N, C, d)
        x = self.positional_encoding(x)
        t = self.timestep_embedding(step_index).unsqueeze(1)  # (N, 1, d), broadcast over the C tokens
        if self.mode == "mid":
            for layer in self.transformer.layers:
                x = layer(x + t)
        else:
            x = self.transformer(x + t)
        query = self.query_vector.expand(n, -1, -1)  # (N, 1, d)
        pooled, _ = self.layer_attention(query, x, x, need_weights=False)  # (N, 1, d)
        return self.output_projection(pooled.squeeze(1)).reshape(n, h, w)  # (N, H*W) -> (N, H, W)


class RelationHead(nn.Module):
    """Classifies a pair of aggregated maps into relation logits (official ``RelationClassifierTransformer``)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        cfg, d = config.head, config.d_model
        self.projection = nn.Linear(2 * config.map_size**2, d)
        self.positional_encoding = SinusoidalPositionalEncoding(d, HEAD_PE_LENGTH)
        self.transformer = _encoder(d, cfg.nhead, cfg.num_layers, cfg.dim_feedforward, cfg.dropout)
        self.timestep_embedding: nn.Embedding | None = None
        if cfg.timestep_embedding_dim > 0:
            self.timestep_embedding = nn.Embedding(config.num_timesteps, cfg.timestep_embedding_dim)
        self.fc = nn.Sequential(
            nn.Linear(d + cfg.timestep_embedding_dim, 256),
            nn.LayerNorm(256),
            nn.LeakyReLU(0.1),
            nn.Dropout(cfg.dropout),
            nn.Linear(256, 128),
            nn.LayerNorm(128),
            nn.LeakyReLU(0.1),
            nn.Dropout(cfg.dropout),
            nn.Linear(128, config.num_relations),
        )

    def forward(self, pair: Tensor, step_index: Tensor) -> Tensor:
        """Map (B, 2, S, S) aggregated maps and (B,) long step indices to (B, R) logits."""
        x = self.projection(pair.flatten(1)).unsqueeze(1)  # (B, 2*S*S) -> (B, 1, d)
        x = self.transformer(self.positional_encoding(x)).squeeze(1)  # (B, d)
        if self.timestep_embedding is not None:
            x = torch.cat([x, self.timestep_embedding(step_index)], dim=1)  # (B, d + t_dim)
        return self.fc(x)


class RelationClassifier(nn.Module):
    """The Learn-to-Steer relation classifier (official ``EnhancedRelationClassifier``).

    Args:
        config: architecture settings; see :class:`ClassifierConfig`.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.object_extractor = ObjectMapExtractor(config)
        self.relation_classifier = RelationHead(config)

    def forward(self, maps: Tensor, step_index: Tensor | int) -> Tensor:
        """Classify the spatial relation between two objects.

        Args:
            maps: (B, 2, C, S, S) float attention maps; index 0 of dim 1 is the subject, 1 the reference object.
                C may be at most ``config.input_channels``; S must equal ``config.map_size``.
            step_index: classifier step index per sample, (B,) or (B, 1), integer-valued (int or float dtype), or a
                Python int for the whole batch. Must lie in [0, num_timesteps).

        Returns:
            (B, R) logits (no softmax).

        Raises:
            ValueError: wrong map shape or step index out of range.
        """
        cfg = self.config
        if maps.ndim != 5 or maps.shape[1] != 2 or maps.shape[3:] != (cfg.map_size, cfg.map_size):
            raise ValueError(
                f"Classifier maps must have shape (B, 2, C, {cfg.map_size}, {cfg.map_size}), found {tuple(maps.shape)}."
            )
        b, _, c = maps.shape[:3]
        if c > cfg.input_channels:
            raise ValueError(
                f"The classifier accepts at most {cfg.input_channels} channels, the maps have {c}. "
                "Check that the classifier matches the model family."
            )
        idx = self._step_index(step_index, b, maps.device)
        param = next(self.parameters())
        flat = maps.to(param.dtype).reshape(b * 2, c, cfg.map_size, cfg.map_size)  # (B*2, C, S, S), objects interleaved
        pooled = self.object_extractor(flat, idx.repeat_interleave(2))  # (B*2, S, S)
        pair = pooled.reshape(b, 2, cfg.map_size, cfg.map_size)  # (B, 2, S, S)
        return self.relation_classifier(pair, idx)

    def _step_index(self, step_index: Tensor | int, batch: int, device: torch.device) -> Tensor:
        idx = torch.as_tensor(step_index, device=device)
        if idx.ndim == 0:
            idx = idx.expand(batch)
        elif idx.ndim == 2 and idx.shape[1] == 1:
            idx = idx[:, 0]  # (B, 1) -> (B,)
        if idx.shape != (batch,):
            raise ValueError(f"step_index must have shape ({batch},) or ({batch}, 1), found {tuple(idx.shape)}.")
        if idx.is_floating_point() and bool((idx != idx.round()).any()):
            raise ValueError(
                f"step_index must hold whole numbers (a step index, not a timestep), found {idx.tolist()}."
            )
        idx = idx.long()
        n = self.config.num_timesteps
        if bool(((idx < 0) | (idx >= n)).any()):
            raise ValueError(
                f"step_index must lie in [0, {n}) for this classifier (trained step-index embedding of size {n}), "
                f"found {idx.tolist()}. Map sampler steps through the checkpoint's trained steps first."
            )
        return idx
