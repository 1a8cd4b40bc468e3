"""End to end for a UNet family and a flow family: triplets -> invert -> train -> export -> l2s_core -> one steering step.

Each case runs the real command line (``python -m training <command>`` from the repository root, as a subprocess)
on a tiny random-weight diffusers pipeline of :mod:`diffusers_tiny` that has the official attention layout of its
family, so no stage needs an escape hatch: the data has the official channel count (SD1.x 128, FLUX.1 1368), the
official architecture trains on it, and :func:`l2s_core.checkpoint.load_classifier` loads the export as that family.
Then one Learn-to-Steer step (:func:`l2s_core.optimize.refine_latent`) runs with the loaded classifier on maps that
:class:`training.recorder.AttentionRecorder` records from the same denoiser, differentiably w.r.t. the latent.

The stages are timed and printed (``pytest -s`` shows them); the weights are random, so the accuracy is only reported,
never asserted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers_tiny import build_tiny_flux, build_tiny_sd  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from l2s_core.attention import MapRequest  # noqa: E402
from l2s_core.checkpoint import load_classifier  # noqa: E402
from l2s_core.optimize import refine_latent  # noqa: E402
from l2s_core.prompts import explicit_triplet  # noqa: E402
from l2s_core.steps import classifier_step_index  # noqa: E402
from training.dual_inverter import spatial_prompt  # noqa: E402
from training.models import load_model  # noqa: E402
from training.pipeline_adapter import PipelineAdapter  # noqa: E402
from training.recorder import AttentionRecorder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NUM_STEPS = 4
RECORD_STEPS = (1, 3)
MAP_SIZE = 16
KINDS = "red square,green triangle,blue circle,yellow star"  # one token per word for the tiny tokenizers


@dataclass(frozen=True)
class Case:
    """One family's run: the tiny model, the data sizes and the options each command gets.

    The official FLUX.1 classifier attends over its 1368 channel tokens (4 layers, d_model 256): on one CPU thread a
    training sample costs ~5.6 s (forward + backward) and an evaluated one ~1 s, so its run is kept to two relations,
    one item per relation and split, positive prompts only and one trained step. The SD1.x classifier (2 layers over
    128 tokens) costs ~0.1 s per sample, so its run has all four relations, dual inversion and both steps.
    """

    family: str
    builder: str
    channels: int
    layout: str
    relations: tuple[str, ...]
    split_sizes: tuple[int, int, int]  # toy items per relation in train, val, test
    negatives: bool
    invert_args: tuple[str, ...]
    train_steps: tuple[int, ...]
    step_size: float


CASES = {
    "sd14": Case(
        family="sd14",
        builder="build_tiny_sd",
        channels=128,
        layout="unet",
        relations=("above", "below", "to the left of", "to the right of"),
        split_sizes=(1, 1, 1),
        negatives=True,
        invert_args=("--resolution", "16", "--fixed-point-iterations", "1"),  # 8x8 latent: maps at 8, 4, 2, 1 px
        train_steps=RECORD_STEPS,
        step_size=7.5,  # the official SD1.4 step size
    ),
    "flux_schnell": Case(
        family="flux_schnell",
        builder="build_tiny_flux",
        channels=1368,
        layout="joint",
        relations=("to the left of", "to the right of"),
        split_sizes=(1, 1, 1),
        negatives=False,
        invert_args=("--resolution", "16", "--max-sequence-length", "16", "--no-negatives"),  # an 8x8 token grid
        train_steps=(3,),
        step_size=5.0,  # the official FLUX step size
    ),
}
BUILDERS = {"build_tiny_sd": build_tiny_sd, "build_tiny_flux": build_tiny_flux}


def cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m training ARGS`` from the repository root on one CPU thread; return it and its wall time."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "training", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, (
        f"python -m training {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc, elapsed


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run far faster (and steadier on a shared CPU) with one intra-op thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("family", list(CASES))
def test_triplets_invert_train_export_load_steer(family: str, tmp_path: Path) -> None:
    case = CASES[family]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model_dir = BUILDERS[case.builder](tmp_path / f"tiny-{family}")
    timings["build model"] = time.perf_counter() - started

    # -- triplets: the toy world, balanced, image-disjoint splits.
    trip = tmp_path / "triplets"
    sizes = ",".join(str(n) for n in case.split_sizes)
    _, timings["triplets"] = cli(
        "triplets",
        "--source",
        "toy",
        "--out",
        str(trip),
        "--split-sizes",
        sizes,
        "--relations",
        ",".join(case.relations),
        "--size",
        "64",
        "--kinds",
        KINDS,
        "--seed",
        "0",
    )
    items = read_jsonl(trip / "items.jsonl")
    assert len(items) == len(case.relations) * sum(case.split_sizes)

    # -- invert: maps at two of four steps, for the positive prompt (and a negative one: dual inversion).
    data = tmp_path / "data"
    proc, timings["invert"] = cli(
        "invert",
        "--triplets",
        str(trip),
        "--out",
        str(data),
        "--model",
        str(model_dir),
        "--family",
        family,
        "--steps",
        str(NUM_STEPS),
        "--record-steps",
        *map(str, RECORD_STEPS),
        "--psnr-threshold",
        "-100",
        "--device",
        "cpu",
        "--threads",
        "1",
        *case.invert_args,
    )
    meta = json.loads((data / "meta.json").read_text(encoding="utf-8"))
    assert (meta["family"], meta["channels"], meta["layout"]) == (family, case.channels, case.layout)
    assert (meta["num_steps"], meta["record_steps"], meta["map_size"]) == (NUM_STEPS, list(RECORD_STEPS), MAP_SIZE)
    index = read_jsonl(data / "index.jsonl")
    prompts = 2 if case.negatives else 1
    assert len(index) == len(items) * prompts * len(RECORD_STEPS)  # every item kept (threshold -100)
    first = index[0]
    assert load_file(str(data / first["shard"]))[first["key"]].shape == (2, case.channels, MAP_SIZE, MAP_SIZE)
    rate = re.search(r"invert: (\d+) items in ([\d.]+) s", proc.stderr)
    assert rate is not None, proc.stderr[-2000:]
    invert_items, invert_seconds = int(rate.group(1)), float(rate.group(2))
    assert invert_items == len(items)

    # -- train: the official architecture of the family, a few steps.
    run_dir = tmp_path / "run"
    _, timings["train"] = cli(
        "train",
        str(data),
        str(run_dir),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--seed",
        "0",
        "--device",
        "cpu",
        "--steps",
        *map(str, case.train_steps),
    )
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs_run"] == 2
    assert metrics["samples"]["train"] == len(case.relations) * case.split_sizes[0] * prompts * len(case.train_steps)
    for split in ("train", "val", "test"):
        assert 0.0 <= metrics["final"][split]["accuracy"] <= 1.0

    # -- export, then load it the way the nodes do.
    exported = tmp_path / f"{family}-tiny.safetensors"
    _, timings["export"] = cli("export", str(run_dir), str(exported))
    started = time.perf_counter()
    loaded = load_classifier(exported, family=family)
    assert (loaded.family, loaded.channels, loaded.layout) == (family, case.channels, case.layout)
    assert loaded.trained_steps == case.train_steps and loaded.trained_num_steps == NUM_STEPS
    assert loaded.map_size == MAP_SIZE and loaded.relations == case.relations

    # -- one steering step: maps recorded from the same denoiser, differentiable w.r.t. the latent.
    model = load_model(str(model_dir), family=family, device="cpu", dtype="float32")
    adapter = PipelineAdapter(model, int(meta["resolution"]), int(meta["max_sequence_length"] or 77), 0.0)
    subject, relation, obj = "red square", "to the left of", "blue circle"
    prompt = spatial_prompt(subject, relation, obj)
    cond = adapter.encode_prompt(prompt)
    triplet = explicit_triplet(prompt, subject, relation, obj)
    target = MapRequest(
        layout="joint" if adapter.token_grid is not None else "unet",
        text_length=cond.text_length,
        subject_positions=tuple(adapter.token_positions(prompt, triplet.subject_span)),
        object_positions=tuple(adapter.token_positions(prompt, triplet.object_span)),
        latent_size=adapter.latent_hw,
        patch_size=adapter.patch_size,
    )
    step = case.train_steps[0]
    timestep = meta["timesteps"][step] if case.layout == "unet" else meta["sigmas"][step] * 1000.0
    recorder = AttentionRecorder(model.denoiser, model.kind)

    def maps_fn(latent_leaf: torch.Tensor, _triplet: int) -> torch.Tensor:
        with recorder.recording(target):
            adapter.denoise(latent_leaf, timestep, cond)
        return recorder.classifier_maps(loaded.map_size)[None]  # (1, 2, C, S, S)

    channels_vae = int(model.pipe.vae.config.latent_channels)
    latent = adapter.pack(torch.randn(1, channels_vae, *adapter.latent_hw, generator=torch.Generator().manual_seed(0)))
    step_index = classifier_step_index(step, NUM_STEPS, loaded.trained_steps, loaded.trained_num_steps)
    with recorder.installed():
        leaf = latent.clone().requires_grad_(True)
        maps = maps_fn(leaf, 0)
        assert maps.shape == (1, 2, case.channels, MAP_SIZE, MAP_SIZE) and maps.grad_fn is not None
        weights = torch.randn(maps.shape, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad((maps * weights).sum(), leaf)  # the recorder must not detach
        assert torch.isfinite(grad).all() and grad.abs().max() > 0
        result = refine_latent(
            latent,
            maps_fn,
            loaded.model,
            [torch.tensor([loaded.relation_index(relation)])],
            step_index=step_index,
            step_size=case.step_size,
            iterations=1,  # one steering step: forward, CE, one gradient step on the latent
        )
    timings["load + steer"] = time.perf_counter() - started
    assert result.latent.shape == latent.shape and not torch.equal(result.latent, latent)
    assert len(result.records) == 1 and result.records[0].updated
    assert torch.isfinite(torch.tensor(result.records[0].losses)).all()

    final = metrics["final"]
    print(  # noqa: T201 -- the measured figures, shown by pytest -s
        f"\n[e2e {family}] C={case.channels}, {len(items)} items -> {len(index)} samples "
        f"(train {metrics['samples']['train']}, val {metrics['samples']['val']}, test {metrics['samples']['test']})"
        f"\n[e2e {family}] invert on CPU (1 thread): {invert_items / invert_seconds:.2f} items/s = "
        f"{len(index) / invert_seconds:.2f} samples/s ({invert_seconds:.1f} s of compute)"
        f"\n[e2e {family}] train 2 epochs: {metrics['seconds']:.1f} s in the trainer; accuracy train "
        f"{final['train']['accuracy']:.3f}, val {final['val']['accuracy']:.3f}, test {final['test']['accuracy']:.3f} "
        f"(random weights: chance is {1 / len(case.relations):.2f})"
        f"\n[e2e {family}] steering step: CE {result.records[0].losses[0]:.4f}, "
        f"|dz|max {(result.latent - latent).abs().max().item():.3g}"
        f"\n[e2e {family}] wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
    )
