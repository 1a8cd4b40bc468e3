"""Record the two objects' text-attention maps inside a diffusers UNet or transformer forward.

This module owns the diffusers side of attention capture for data creation: it finds the attention layers and
projects q and k the way each model's processor does; the maps themselves come from :mod:`l2s_core.attention`, the
same functions the ComfyUI capture (``nodes/capture.py``) uses, so the training data and the steering nodes share
one definition of the maps and one channel layout:

* UNet (SD1.x, SD2.x, SDXL): every cross-attention call (``attn2``); probabilities = softmax(q k^T / sqrt(d)) over
  **all** text tokens, in float32; one layer per call, in call order.
* FLUX: every joint attention of the double blocks (``transformer_blocks``) and single blocks
  (``single_transformer_blocks``), call order = double then single. The joint sequence is text first, then image;
  the maps are image queries x text keys with the softmax over the **text keys only** (after the per-head RMSNorm
  and RoPE, exactly as the model's attention sees q and k).
* SD3: the joint attention of every ``transformer_blocks`` block (image queries x context keys, softmax over the
  context keys only); the image-only ``attn2`` of SD3.5 blocks is not recorded.

Each object's maps are stored as :class:`l2s_core.layout.LayerMaps`; :meth:`AttentionRecorder.classifier_maps` turns them into the classifier input
with :func:`l2s_core.layout.classifier_input`.

The recording processors wrap the model's own processors: the layer output is computed by the original processor,
unchanged, and the maps are computed on the side from the same projections. They are installed only inside
:meth:`AttentionRecorder.installed` and the originals are restored in ``finally``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from l2s_core.attention import MapRequest, cross_attention_maps, joint_attention_maps, unet_layer_grid
from l2s_core.families import JOINT, UNET
from l2s_core.layout import LayerMaps, classifier_input

logger = logging.getLogger(__name__)

UNET_CROSS = "unet_cross"
FLUX_DOUBLE = "flux_double"
FLUX_SINGLE = "flux_single"
SD3_JOINT = "sd3_joint"

_FLUX_DOUBLE_NAME = re.compile(r"^transformer_blocks\.\d+\.attn$")
_FLUX_SINGLE_NAME = re.compile(r"^single_transformer_blocks\.\d+\.attn$")
_SD3_JOINT_NAME = re.compile(r"^transformer_blocks\.\d+\.attn$")


def unet_cross_qk(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of a diffusers cross-attention ``Attention`` (the AttnProcessor2_0 preprocessing).

    Returns:
        ``(query, key)``: ``(B, heads, N, D)`` image queries and ``(B, heads, T, D)`` text keys.
    """
    hs = hidden_states
    if attn.spatial_norm is not None:
        hs = attn.spatial_norm(hs, temb)
    if hs.ndim == 4:
        b, c, h, w = hs.shape
        hs = hs.view(b, c, h * w).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
    if attn.group_norm is not None:
        hs = attn.group_norm(hs.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hs)  # (B, N, heads*D)
    enc = encoder_hidden_states
    if attn.norm_cross:
        enc = attn.norm_encoder_hidden_states(enc)
    key = attn.to_k(enc)  # (B, T, heads*D)
    batch = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, D)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, T, D)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key


def _flux_qk(
    attn: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: Any,
    text_length: int,
) -> torch.Tensor:
    """Image queries and text keys of a FLUX attention (double or single block), text first.

    Recomputes q and k as diffusers' FluxAttnProcessor does (projections, per-head RMSNorm, added projections for
    double blocks, concatenation text-then-image, RoPE).

    Returns:
        ``(q_img, k_txt)``: ``(B, heads, N_img, D)`` and ``(B, heads, T, D)``.
    """
    from diffusers.models.embeddings import apply_rotary_emb

    if getattr(attn, "fused_projections", False):
        query, key, _ = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        query, key = attn.to_q(hidden_states), attn.to_k(hidden_states)  # (B, L, heads*D)
    query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))  # (B, L, heads, D)
    key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))  # (B, L, heads, D)
    if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
        if getattr(attn, "fused_projections", False):
            enc_query, enc_key, _ = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
        else:
            enc_query = attn.add_q_proj(encoder_hidden_states)
            enc_key = attn.add_k_proj(encoder_hidden_states)
        enc_query = attn.norm_added_q(enc_query.unflatten(-1, (-1, attn.head_dim)))  # (B, T, heads, D)
        enc_key = attn.norm_added_k(enc_key.unflatten(-1, (-1, attn.head_dim)))  # (B, T, heads, D)
        query = torch.cat([enc_query, query], dim=1)  # (B, T + N, heads, D): text first
        key = torch.cat([enc_key, key], dim=1)
    if image_rotary_emb is not None:
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    q_img = query[:, text_length:].transpose(1, 2)  # (B, heads, N_img, D)
    k_txt = key[:, :text_length].transpose(1, 2)  # (B, heads, T, D)
    return q_img, k_txt


def _sd3_qk(attn: Any, hidden_states: torch.Tensor,
            encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image queries and context keys of an SD3 joint attention (JointAttnProcessor2_0 projections).

    Returns:
        ``(q_img, k_ctx)``: ``(B, heads, N_img, D)`` and ``(B, heads, T, D)``.
    """
    batch = hidden_states.shape[0]
    query = attn.to_q(hidden_states)  # (B, N, heads*D)
    head_dim = query.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, D)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    key = attn.add_k_proj(encoder_hidden_states)  # (B, T, heads*D)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, T, D)
    if attn.norm_added_k is not None:
        key = attn.norm_added_k(key)
    return query, key


class _RecordingProcessor:
    """Wraps one attention layer's processor: the output comes from the original, the maps are added on the side."""

    def __init__(self, inner: Any, recorder: AttentionRecorder, role: str) -> None:
        self.inner = inner
        self.recorder = recorder
        self.role = role

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.recorder.active:
            self.recorder._record(self.role, attn, hidden_states, encoder_hidden_states, image_rotary_emb, temb)
        if image_rotary_emb is not None:
            kwargs["image_rotary_emb"] = image_rotary_emb
        if temb is not None:
            kwargs["temb"] = temb
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)


class AttentionRecorder:
    """Installs recording processors on a diffusers UNet/transformer and collects maps for one forward at a time.

    Usage::

        recorder = AttentionRecorder(unet, "sd")
        with recorder.installed():
            with recorder.recording(target):
                unet(latent, t, encoder_hidden_states=emb)
            maps = recorder.classifier_maps(map_size=16)  # (2, C, S, S) float32

    Args:
        denoiser: ``pipe.unet`` or ``pipe.transformer``.
        kind: ``"sd"``/``"sdxl"`` (UNet), ``"flux"`` or ``"sd3"``.

    Raises:
        ValueError: an unknown kind, or no attention layer to record was found.
    """

    def __init__(self, denoiser: torch.nn.Module, kind: str) -> None:
        if kind not in ("sd", "sdxl", "flux", "sd3"):
            raise ValueError(f"Unknown denoiser kind {kind!r}; expected 'sd', 'sdxl', 'flux' or 'sd3'.")
        self.denoiser = denoiser
        self.kind = kind
        self.layout = UNET if kind in ("sd", "sdxl") else JOINT
        self._roles: dict[str, str] = {}
        self._heads: dict[str, int] = {}
        for name, module in denoiser.named_modules():
            role = self._role_of(name, module)
            if role is not None:
                self._roles[name] = role
                self._heads[name] = int(module.heads)
        if not self._roles:
            raise ValueError(
                f"No attention layers to record were found in the {type(denoiser).__name__} (kind {kind!r}); "
                "is this the denoiser of the pipeline?"
            )
        self._target: MapRequest | None = None
        self.subject: list[LayerMaps] = []
        self.object: list[LayerMaps] = []

    # -- structure ----------------------------------------------------------------------------------------------

    def _role_of(self, name: str, module: torch.nn.Module) -> str | None:
        if not hasattr(module, "set_processor") or not hasattr(module, "processor"):
            return None
        if self.layout == UNET:
            if name.endswith("attn2") and bool(getattr(module, "is_cross_attention", True)):
                return UNET_CROSS
            return None
        if self.kind == "flux":
            if _FLUX_DOUBLE_NAME.match(name):
                return FLUX_DOUBLE
            if _FLUX_SINGLE_NAME.match(name):
                return FLUX_SINGLE
            return None
        return SD3_JOINT if _SD3_JOINT_NAME.match(name) else None

    @property
    def num_layers(self) -> int:
        """Number of recorded attention layers."""
        return len(self._roles)

    @property
    def channels(self) -> int:
        """Channels C of the classifier input: the heads of all recorded layers."""
        return sum(self._heads.values())

    @property
    def active(self) -> bool:
        """True inside :meth:`recording`."""
        return self._target is not None

    @contextmanager
    def installed(self) -> Iterator[AttentionRecorder]:
        """Install the recording processors for the duration of the block; the originals come back in finally."""
        originals = dict(self.denoiser.attn_processors)
        replaced = dict(originals)
        for key, processor in originals.items():
            module_name = key[: -len(".processor")] if key.endswith(".processor") else key
            role = self._roles.get(module_name)
            if role is not None:
                replaced[key] = _RecordingProcessor(processor, self, role)
        self.denoiser.set_attn_processor(replaced)
        try:
            yield self
        finally:
            self._target = None
            self.denoiser.set_attn_processor(dict(originals))

    @contextmanager
    def recording(self, target: MapRequest) -> Iterator[AttentionRecorder]:
        """Record every layer's maps during the forward pass run inside the block (clears an earlier pass)."""
        if target.layout != self.layout:
            raise ValueError(f"A {self.kind} denoiser records {self.layout!r} maps; the request is {target.layout!r}.")
        self.subject, self.object = [], []
        self._target = target
        try:
            yield self
        finally:
            self._target = None

    # -- recording ----------------------------------------------------------------------------------------------

    def _record(
        self,
        role: str,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        image_rotary_emb: Any,
        temb: torch.Tensor | None,
    ) -> None:
        target = self._target
        assert target is not None
        if role == UNET_CROSS:
            if encoder_hidden_states is None:
                return
            queries, keys = unet_cross_qk(attn, hidden_states, encoder_hidden_states, temb)  # (B, h, N|T, D)
            grid = unet_layer_grid(queries.shape[2], target.latent_size)
            maps = cross_attention_maps
        elif role in (FLUX_DOUBLE, FLUX_SINGLE):
            queries, keys = _flux_qk(attn, hidden_states, encoder_hidden_states, image_rotary_emb, target.text_length)
            grid, maps = target.image_grid, joint_attention_maps
        else:
            if encoder_hidden_states is None:
                return
            queries, keys = _sd3_qk(attn, hidden_states, encoder_hidden_states)
            grid, maps = target.image_grid, joint_attention_maps
        if keys.shape[2] != target.text_length:
            raise ValueError(
                f"An attention layer attends to {keys.shape[2]} text tokens, but the prompt was encoded to "
                f"{target.text_length}; the token positions would not line up."
            )
        if queries.shape[2] != grid[0] * grid[1]:
            raise ValueError(
                f"An attention layer has {queries.shape[2]} image queries, but the grid {grid} has {grid[0] * grid[1]}."
            )
        subject, obj = maps(queries, keys, target.subject_positions, target.object_positions)  # (B, h, N) each
        index = len(self.subject)
        self.subject.append(LayerMaps.from_flat(index, grid, subject))
        self.object.append(LayerMaps.from_flat(index, grid, obj))

    def layers(self) -> tuple[list[LayerMaps], list[LayerMaps]]:
        """The (subject, object) layers of the last recorded pass."""
        return list(self.subject), list(self.object)

    def classifier_maps(self, map_size: int) -> torch.Tensor:
        """The last pass's maps in the classifier's input layout (:func:`l2s_core.layout.classifier_input`).

        Returns:
            Float32 tensor ``(2, C, S, S)`` (subject, object), batch 1 squeezed.

        Raises:
            RuntimeError: nothing was recorded, or another number of layers than the model has.
        """
        if not self.subject:
            raise RuntimeError("No attention was recorded; run the denoiser inside `recording(target)` first.")
        if len(self.subject) != self.num_layers:
            raise RuntimeError(
                f"Recorded {len(self.subject)} attention layers in one forward, expected {self.num_layers}."
            )
        maps = classifier_input(self.subject, self.object, self.layout, map_size)  # (1, 2, C, S, S)
        if maps.shape[0] != 1:
            raise RuntimeError(f"Data creation records batch size 1, got {maps.shape[0]}.")
        return maps[0]  # (2, C, S, S)
