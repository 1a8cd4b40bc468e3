"""Attention-map layout: the contract between captured attention and the relation classifier's input.

This module owns everything between "per-layer cross-attention probabilities over the text tokens" and the
``(B, 2, C, S, S)`` tensor the classifier takes:

* :func:`token_average`: mean over an object's token columns (multi-token words);
* :class:`LayerMaps` and :func:`order_layers`: one recorded layer's maps for one object, and the channel order per
  layout (``"unet"``: resolution ascending, then layer call order, then head; ``"joint"``: call order, i.e. FLUX's 19
  double blocks then 38 single blocks, then head);
* :func:`resize_and_renormalise` and :func:`object_channels`: bilinear resize to the classifier's map size and the
  official renormalisation rule;
* :func:`classifier_input`: stacking subject and object;
* :func:`check_channel_count`: an error that names both architectures when a classifier meets the wrong model.

Everything is differentiable (no in-place updates, no ``.item()``): the gradient of the classifier loss flows back
through these maps to the attention probabilities and on to the latent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .families import JOINT, LAYOUTS, UNET, describe_channel_count, get_family
from .fields import as_index

logger = logging.getLogger(__name__)

RENORM_EPS = 1e-8
"""Added to each map's spatial sum before dividing (official value)."""


def _check_layout(layout: str) -> None:
    """Raise a ValueError unless ``layout`` is one of :data:`~.families.LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"Unknown attention layout {layout!r}; expected one of {LAYOUTS} "
            "('unet' for SD1.x/SD2.x/SDXL, 'joint' for SD3/FLUX). Use get_family(name).layout."
        )


def token_average(probs: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """Average attention probabilities over the token columns of one object.

    A single position gives that column unchanged; several positions (a word split into sub-word tokens) give their
    mean.

    Args:
        probs: Cross-attention probabilities, shape ``(B, heads, N, T)``: N image positions, T text tokens.
        positions: Distinct text-token positions of the object, each in ``[0, T)``.

    Returns:
        Tensor of shape ``(B, heads, N)``.

    Raises:
        ValueError: ``probs`` is not 4-D, or ``positions`` is empty, repeats a position or leaves ``[0, T)``.
    """
    if probs.ndim != 4:
        raise ValueError(
            f"token_average expects attention probabilities of shape (B, heads, N, T), got {tuple(probs.shape)}."
        )
    num_tokens = probs.shape[-1]
    if len(positions) == 0:
        raise ValueError("token_average needs at least one token position for the object; got an empty list.")
    idx = [as_index(p, "A token position") for p in positions]
    bad = [p for p in idx if not 0 <= p < num_tokens]
    if bad:
        raise ValueError(
            f"Token positions {bad} are outside the text sequence of length {num_tokens} (valid: 0..{num_tokens - 1}). "
            "Check that the prompt was tokenised with the same tokenizer and padding as the conditioning."
        )
    if len(set(idx)) != len(idx):
        raise ValueError(f"Token positions must be distinct, got {idx}.")
    index = torch.tensor(idx, dtype=torch.long, device=probs.device)
    selected = probs.index_select(-1, index)  # (B, heads, N, len(idx))
    return selected.mean(dim=-1)  # (B, heads, N)


@dataclass(frozen=True, eq=False)
class LayerMaps:
    """One recorded attention layer's maps for one object.

    Attributes:
        call_index: Position of the layer in the denoiser's call order within one forward pass (0-based).
            For FLUX: double blocks 0..18, then single blocks 19..56.
        grid: ``(h, w)`` token grid of the layer's image queries.
        maps: Token-averaged attention of shape ``(B, heads, h, w)``.
    """

    call_index: int
    grid: tuple[int, int]
    maps: torch.Tensor

    def __post_init__(self) -> None:
        """Validate the index, the grid and the maps' shape."""
        call_index = as_index(self.call_index, "LayerMaps.call_index")
        if call_index < 0:
            raise ValueError(f"LayerMaps.call_index must be >= 0, got {call_index}.")
        if len(self.grid) != 2:
            raise ValueError(f"LayerMaps.grid must be (h, w), got {self.grid!r}.")
        h = as_index(self.grid[0], "LayerMaps.grid height")
        w = as_index(self.grid[1], "LayerMaps.grid width")
        if h <= 0 or w <= 0:
            raise ValueError(f"LayerMaps.grid must be positive, got {(h, w)}.")
        object.__setattr__(self, "call_index", call_index)
        object.__setattr__(self, "grid", (h, w))
        if not isinstance(self.maps, torch.Tensor):
            raise ValueError(f"LayerMaps.maps must be a torch.Tensor, got {type(self.maps).__name__}.")
        if self.maps.ndim != 4 or tuple(self.maps.shape[-2:]) != (h, w):
            raise ValueError(
                f"LayerMaps.maps for layer {call_index} must have shape (B, heads, {h}, {w}) to match grid {(h, w)}, "
                f"got {tuple(self.maps.shape)}. Reshape flat maps (B, heads, h*w) with LayerMaps.from_flat."
            )

    @property
    def heads(self) -> int:
        """Number of heads (channels this layer contributes)."""
        return int(self.maps.shape[1])

    @classmethod
    def from_flat(cls, call_index: int, grid: tuple[int, int], maps: torch.Tensor) -> LayerMaps:
        """Build from maps whose spatial axis is flattened row-major, shape ``(B, heads, h*w)``.

        Args:
            call_index: Layer position in call order.
            grid: ``(h, w)`` of the image-token grid.
            maps: Tensor ``(B, heads, h*w)``, e.g. the output of :func:`token_average`.

        Returns:
            The layer's maps as ``(B, heads, h, w)``.

        Raises:
            ValueError: ``maps`` is not 3-D or its last axis is not ``h*w``.
        """
        if maps.ndim != 3 or len(grid) != 2 or maps.shape[-1] != grid[0] * grid[1]:
            raise ValueError(
                f"LayerMaps.from_flat expects maps of shape (B, heads, h*w) with (h, w) = {tuple(grid)}, "
                f"got {tuple(maps.shape)}. For a non-square grid pass the real (h, w) of the image tokens."
            )
        b, heads, _ = maps.shape
        h, w = int(grid[0]), int(grid[1])
        return cls(call_index, (h, w), maps.reshape(b, heads, h, w))  # (B, heads, h*w) -> (B, heads, h, w)


def order_layers(layers: Sequence[LayerMaps], layout: str) -> list[LayerMaps]:
    """Put recorded layers in the classifier's channel order.

    ``"unet"``: by resolution ascending (``h*w``), then call order; e.g. for SD at 512px: mid 8x8, then the
    five 16x16 layers (down before up), 32x32, 64x64. ``"joint"``: by call order (FLUX double blocks, then
    single blocks). Heads keep their natural order inside each layer.

    Args:
        layers: The recorded layers for one object, in any order.
        layout: ``"unet"`` or ``"joint"``.

    Returns:
        A new list in channel order.

    Raises:
        ValueError: unknown layout, no layers, or two layers with the same call index.
    """
    _check_layout(layout)
    if len(layers) == 0:
        raise ValueError(
            "No attention layers were recorded for the object. The attention capture must run during the denoiser "
            "forward before the classifier input is built."
        )
    indices = [layer.call_index for layer in layers]
    if len(set(indices)) != len(indices):
        dupes = sorted({i for i in indices if indices.count(i) > 1})
        raise ValueError(f"Attention layers must have distinct call indices; {dupes} appear more than once.")
    if layout == UNET:
        return sorted(layers, key=lambda layer: (layer.grid[0] * layer.grid[1], layer.call_index))
    assert layout == JOINT
    return sorted(layers, key=lambda layer: layer.call_index)


def resize_and_renormalise(maps: torch.Tensor, size: int, renormalise: bool) -> torch.Tensor:
    """Resize maps to ``size x size`` and optionally renormalise each to sum 1.

    The resize is ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``, as in the official code:
    32 -> 16 equals 2x2 average pooling, 64 -> 16 takes the mean of the middle 2x2 of every 4x4 block, and
    ``size`` equal to the input grid is the identity. Renormalisation divides each map by its own spatial sum
    + 1e-8.

    Args:
        maps: Tensor ``(B, C, h, w)``; ``h`` and ``w`` may differ.
        size: Output side ``S``.
        renormalise: Divide each resized map by its spatial sum.

    Returns:
        Tensor ``(B, C, size, size)`` in the input dtype.

    Raises:
        ValueError: ``maps`` is not 4-D floating point or ``size`` is not a positive integer.
    """
    if maps.ndim != 4:
        raise ValueError(f"resize_and_renormalise expects maps of shape (B, C, h, w), got {tuple(maps.shape)}.")
    if not maps.is_floating_point():
        raise ValueError(f"resize_and_renormalise expects floating-point maps, got dtype {maps.dtype}.")
    size = as_index(size, "The map size")
    if size <= 0:
        raise ValueError(f"The map size must be positive, got {size}.")
    if tuple(maps.shape[-2:]) != (size, size):
        maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if renormalise:
        maps = maps / (maps.sum(dim=(-2, -1), keepdim=True) + RENORM_EPS)  # (B, C, S, S) / (B, C, 1, 1)
    return maps


def object_channels(
    layers: Sequence[LayerMaps],
    layout: str,
    map_size: int,
    *,
    renormalise_single_grid: bool | None = None,
) -> torch.Tensor:
    """Build one object's classifier channels from its recorded layers.

    The layers are ordered with :func:`order_layers`; each layer contributes its heads in order, so
    ``C = sum(heads)``. The official rule decides about resizing and renormalisation:

    * more than one distinct grid (SD's UNet), or a single grid that is not ``map_size x map_size`` (FLUX-dev at
      32x32, or any non-square grid): resize every map to ``map_size`` and renormalise it to sum 1;
    * exactly one grid equal to ``map_size x map_size`` (FLUX-schnell at 16x16): the maps are returned raw.

    ``renormalise_single_grid`` (our extension) overrides the second half of that rule for single-grid models only,
    e.g. to follow a family's training convention away from its official resolution: True always renormalises, False
    never does (the maps are still resized). Multi-grid maps are always renormalised. ``None`` (default) applies the official rule exactly.

    Maps are cast to float32 before resizing, so bf16 attention is resized and renormalised in float32.

    Args:
        layers: One object's recorded layers, any order.
        layout: ``"unet"`` or ``"joint"``.
        map_size: Classifier map side ``S`` (16 for the official checkpoints).
        renormalise_single_grid: See above.

    Returns:
        Float32 tensor ``(B, C, S, S)``.

    Raises:
        ValueError: unknown layout, no layers, duplicate call indices, bad map size, or layers whose batch sizes
            differ.
    """
    ordered = order_layers(layers, layout)
    map_size = as_index(map_size, "The map size")
    if map_size <= 0:
        raise ValueError(f"The map size must be positive, got {map_size}.")
    batch_sizes = {int(layer.maps.shape[0]) for layer in ordered}
    if len(batch_sizes) != 1:
        raise ValueError(f"All attention layers of one object must share the batch size, got {sorted(batch_sizes)}.")

    grids = {layer.grid for layer in ordered}
    if len(grids) > 1:
        resize, renormalise = True, True
    else:
        (grid,) = grids
        resize = grid != (map_size, map_size)
        renormalise = resize if renormalise_single_grid is None else renormalise_single_grid

    # Consecutive layers with the same grid are resized together: one interpolate call per run of equal grids,
    # which keeps the channel order of `ordered` exactly.
    runs: list[list[LayerMaps]] = []
    for layer in ordered:
        if runs and runs[-1][0].grid == layer.grid:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    parts: list[torch.Tensor] = []
    for run in runs:
        group = torch.cat([layer.maps for layer in run], dim=1).to(torch.float32)  # (B, sum heads, h, w)
        if resize or renormalise:
            group = resize_and_renormalise(group, map_size, renormalise)  # (B, sum heads, S, S)
        parts.append(group)
    return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, C, S, S)


def _structure(layers: Sequence[LayerMaps], layout: str) -> list[tuple[int, tuple[int, int], int]]:
    """(call_index, grid, heads) per layer in channel order: two objects must agree on it channel by channel."""
    return [(layer.call_index, layer.grid, layer.heads) for layer in order_layers(layers, layout)]


def classifier_input(
    subject_layers: Sequence[LayerMaps],
    object_layers: Sequence[LayerMaps],
    layout: str,
    map_size: int,
    *,
    renormalise_single_grid: bool | None = None,
) -> torch.Tensor:
    """Stack subject and object channels into the classifier input.

    Args:
        subject_layers: Recorded layers for the first object of the relation (the subject).
        object_layers: Recorded layers for the second object, with the same layers, grids and heads.
        layout: ``"unet"`` or ``"joint"``.
        map_size: Classifier map side ``S``.
        renormalise_single_grid: Passed to :func:`object_channels`; ``None`` follows the official rule exactly.

    Returns:
        Float32 tensor ``(B, 2, C, S, S)``; index 0 on dim 1 is the subject.

    Raises:
        ValueError: the two objects were recorded with different layers, grids or head counts, or see
            :func:`object_channels`.
    """
    subj_struct = _structure(subject_layers, layout)
    obj_struct = _structure(object_layers, layout)
    if subj_struct != obj_struct:
        raise ValueError(
            "Subject and object attention must come from the same layers with the same grids and heads "
            f"(call_index, grid, heads): subject {subj_struct[:4]}{'...' if len(subj_struct) > 4 else ''} "
            f"({len(subj_struct)} layers), object {obj_struct[:4]}{'...' if len(obj_struct) > 4 else ''} "
            f"({len(obj_struct)} layers). Record both objects from the same forward pass."
        )
    subj = object_channels(subject_layers, layout, map_size, renormalise_single_grid=renormalise_single_grid)
    obj = object_channels(object_layers, layout, map_size, renormalise_single_grid=renormalise_single_grid)
    if subj.shape[0] != obj.shape[0]:
        raise ValueError(f"Subject and object maps must share the batch size, got {subj.shape[0]} and {obj.shape[0]}.")
    return torch.stack((subj, obj), dim=1)  # (B, 2, C, S, S)


def check_channel_count(expected: int, produced: int, *, expected_family: str | None = None) -> None:
    """Check that the model's attention channels match what the classifier was trained on.

    Args:
        expected: Channels the classifier takes (its ``input_channels`` as used at training).
        produced: Channels the captured attention has (``C`` of :func:`object_channels`).
        expected_family: Family the classifier was trained for (name or alias), named in the message if given.

    Raises:
        ValueError: the counts differ, e.g. "The classifier expects 1368 attention channels (FLUX.1), but the model
            produced 195 (SD2.x). ...", or either count is not a positive integer.
    """
    expected = as_index(expected, "The expected channel count")
    produced = as_index(produced, "The produced channel count")
    if expected <= 0 or produced <= 0:
        raise ValueError(f"Channel counts must be positive, got expected={expected}, produced={produced}.")
    if expected == produced:
        return
    trained_for = ""
    if expected_family is not None:
        try:
            trained_for = f" (trained for {get_family(expected_family).display})"
        except ValueError:
            trained_for = f" (trained for {expected_family})"
    produced_arch = describe_channel_count(produced)
    advice = (
        f"Load a classifier trained for this model family ({produced_arch})"
        if produced_arch != "an unknown architecture"
        else "Load a classifier trained for this model family"
    )
    raise ValueError(
        f"The classifier{trained_for} expects {expected} attention channels ({describe_channel_count(expected)}), "
        f"but the model produced {produced} ({produced_arch}). {advice}, or use the model the classifier was "
        "trained for. A different resolution or a model variant with other layers/heads also changes the count."
    )
