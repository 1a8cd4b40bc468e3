"""Tiny random-weight diffusers pipelines, built offline, for the training tests.

This module owns the test doubles of real model folders: an SD1-style :class:`~diffusers.StableDiffusionPipeline`
and a FLUX-style :class:`~diffusers.FluxPipeline` with the official attention layouts (so their maps have the
official classifiers' channel counts, 128 and 1368, and data recorded from them trains and loads like real data),
and SDXL- and SD3-style pipelines (families whose channel count depends on the model), saved with
``save_pretrained`` so the code under test loads them exactly like a downloaded model
(``from_pretrained(..., local_files_only=True)``). The SD1 folder is ~35 MB, the FLUX one ~105 MB, the others a few.
Nothing here touches the network: the CLIP tokenizer comes from a vocab.json/merges.txt written here (whole words
of :data:`WORDS` as single BPE tokens), the T5 tokenizer from a tiny Unigram vocabulary.

Import it from a test (``tests/`` is on ``sys.path`` under pytest)::

    from diffusers_tiny import build_tiny_flux, build_tiny_sd, build_tiny_sd3, build_tiny_sdxl
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

#: Words the tests put in prompts; each is one token for both tiny tokenizers.
WORDS: tuple[str, ...] = (
    "a",
    "an",
    "the",
    "is",
    "of",
    "to",
    "left",
    "right",
    "above",
    "below",
    "red",
    "blue",
    "green",
    "yellow",
    "square",
    "circle",
    "triangle",
    "star",
    "dog",
    "cat",
)

#: Attention layout of :func:`build_tiny_sd` (SD1.x): 16 cross-attention layers x 8 heads = 128 channels.
SD1_LAYERS = 16
SD1_HEADS = 8
#: Attention layout of :func:`build_tiny_flux` (FLUX.1): (19 double + 38 single blocks) x 24 heads = 1368 channels.
FLUX_DOUBLE_BLOCKS = 19
FLUX_SINGLE_BLOCKS = 38
FLUX_HEADS = 24
FLUX_HEAD_DIM = 6

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: repeatedly merge the lowest-ranked adjacent pair (all its occurrences)."""
    word = list(symbols)
    while len(word) > 1:
        pairs = [(ranks[p], p) for p in zip(word[:-1], word[1:], strict=True) if p in ranks]
        if not pairs:
            break
        _, (first, second) = min(pairs)
        merged: list[str] = []
        i = 0
        while i < len(word):
            if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = merged
    return word


def _clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A CLIP BPE vocabulary in which every word of :data:`WORDS` is a single ``word</w>`` token.

    Single letters (plain and with ``</w>``) are always in the vocabulary, so any other lower-case word still
    encodes (as several tokens). For each word, BPE is simulated with the merges so far and new merges (lowest
    priority) join whatever pieces are left, left to right, until the word is one token; earlier words, already
    single tokens, cannot be affected. Every merge result is a vocabulary entry.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab_list: list[str] = list(letters) + [c + "</w>" for c in letters]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        pieces = _bpe(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in vocab_list:
                vocab_list.append(pair[0] + pair[1])
            pieces = _bpe(symbols, ranks)
    vocab_list += [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(vocab_list)}, [f"{a} {b}" for a, b in merges]


def build_clip_tokenizer(folder: Path):  # -> transformers.CLIPTokenizer
    """Write vocab.json/merges.txt into ``folder`` and load a CLIPTokenizer from them (model_max_length 77)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_vocab_and_merges()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)
    for word in WORDS:
        ids = tok(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, ids)
    return tok


def _clip_tokenizer():  # -> transformers.CLIPTokenizer
    """The tiny CLIP tokenizer, built in a throw-away folder (the pipeline saves its own copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        return build_clip_tokenizer(Path(tmp))


def build_t5_tokenizer():  # -> transformers.T5Tokenizer
    """A T5 tokenizer over a tiny Unigram vocabulary: pad=0, eos=1, unk=2, then "▁" and "▁word" pieces."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for word in WORDS:
        pieces.append(("▁" + word, -1.0))
        pieces.append(("▁" + word.capitalize(), -1.0))
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    return tok


def _clip_text_encoder(vocab_size: int, eos_id: int, bos_id: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=32,
    )
    return CLIPTextModel(config).eval()


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save an SD1-style StableDiffusionPipeline with random weights under ``folder`` and return it.

    UNet: the attention layout of SD1.x, i.e. of the official SD1.4 classifier (128 channels): four levels of
    widths (32, 64, 128, 128) (SD1.x: 320 x (1, 2, 4, 4)), two layers per block, cross-attention at the first three
    down levels, in the mid block and at the last three up levels -> 6 + 1 + 9 = 16 ``attn2`` layers of 8 heads
    each (head dim 4 / 8 / 16); cross_attention_dim 32. So ``--family sd14`` data from it has the official
    channel count and trains the official architecture. VAE: (32, 64), so an R px image has an R/2 latent;
    resolutions are multiples of 16 (VAE factor 2 x three UNet down-samplings). DDIM scheduler with the SD betas.
    The folder loads with ``StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)``.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    folder = Path(folder)
    tok = _clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=SD1_HEADS,  # diffusers' legacy name for the SD1 head count of UNet2DConditionModel
        norm_num_groups=32,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    ).eval()
    text_encoder = _clip_text_encoder(len(tok), tok.eos_token_id, tok.bos_token_id, seed + 2)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux(folder: Path, seed: int = 0) -> Path:
    """Save a FLUX-style FluxPipeline with random weights under ``folder`` and return it.

    Transformer: the attention layout of FLUX.1, i.e. of the official FLUX classifiers (1368 channels): 19 double +
    38 single blocks of 24 heads each, head dim 6 (the smallest RoPE width with an even share per axis,
    axes_dims_rope (2, 2, 2)); joint_attention_dim 32 (the tiny T5's width), pooled_projection_dim 32 (the tiny
    CLIP's width), no guidance embedding (schnell-like, so it is detected as ``flux_schnell``). VAE with one block
    (scale factor 1, one latent channel), so an R px image gives an RxR latent and an (R/2)x(R/2) token grid.
    About 26 M parameters (diffusers fixes the MLPs at 4x the width); a forward pass on an 8x8 grid takes ~0.15 s
    on one CPU thread.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    folder = Path(folder)
    clip_tok = _clip_tokenizer()
    t5_tok = build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=FLUX_DOUBLE_BLOCKS,
        num_single_layers=FLUX_SINGLE_BLOCKS,
        attention_head_dim=FLUX_HEAD_DIM,
        num_attention_heads=FLUX_HEADS,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(2, 2, 2),  # sums to the head dim
        guidance_embeds=False,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()
    text_encoder = _clip_text_encoder(len(clip_tok), clip_tok.eos_token_id, clip_tok.bos_token_id, seed + 2)
    t5 = _tiny_t5(len(t5_tok), seed + 3)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def _clip_with_projection(vocab_size: int, eos_id: int, bos_id: int, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        projection_dim=32,
    )
    return CLIPTextModelWithProjection(config).eval()


def _tiny_t5(vocab_size: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()


def build_tiny_sdxl(folder: Path, seed: int = 0) -> Path:
    """Save an SDXL-style StableDiffusionXLPipeline with random weights (two tiny CLIPs, text-time embedding)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    folder = Path(folder)
    tok = _clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + 32 pooled
        cross_attention_dim=64,  # 32 + 32 (both CLIPs' hidden states)
        norm_num_groups=8,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=_clip_text_encoder(len(tok), tok.eos_token_id, tok.bos_token_id, seed + 2),
        text_encoder_2=_clip_with_projection(len(tok), tok.eos_token_id, tok.bos_token_id, seed + 3),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sd3(folder: Path, seed: int = 0) -> Path:
    """Save an SD3-style StableDiffusion3Pipeline with random weights (1 joint block, 4 heads of dim 8)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    folder = Path(folder)
    tok = _clip_tokenizer()
    t5_tok = build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    ).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=_clip_with_projection(len(tok), tok.eos_token_id, tok.bos_token_id, seed + 2),
        tokenizer=tok,
        text_encoder_2=_clip_with_projection(len(tok), tok.eos_token_id, tok.bos_token_id, seed + 3),
        tokenizer_2=tok,
        text_encoder_3=_tiny_t5(len(t5_tok), seed + 4),
        tokenizer_3=t5_tok,
    )
    pipe.save_pretrained(folder)
    return folder
