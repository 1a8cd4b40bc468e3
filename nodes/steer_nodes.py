"""Learned Spatial Steer: the KSampler-style all-in-one node and the SAMPLER for SamplerCustom(Advanced)."""

from __future__ import annotations

from typing import Any

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..l2s_core.checkpoint import LoadedClassifier
from ..l2s_core.presets import STEERING_MODES, CustomValues, mode_options
from ..l2s_core.recompute import MEMORY_MODES
from ..l2s_core.steps import ScheduleWindow, full_steps_for_denoise
from .reports import trace_report
from .steering import SteeringJob, SteeringOptions, SteeringSettings, steering_sampler
from .types import CATEGORY, RelationClassifierType, SteeringTraceType


def steering_inputs() -> list[io.Input]:
    """The steering settings shared by both nodes: a mode, and the explicit numbers of ``custom`` mode."""
    return [
        io.Combo.Input(
            "mode", options=list(STEERING_MODES), default="official",
            tooltip="official: the published loop (up to 16 passes on each of the first half of the steps), to "
            "reproduce the paper. fast: each update moves the latent by a fixed share (24 %) of its spread, with its "
            "mean and spread kept, and a step stops once the classifier reads the relation with p >= 0.9: about a "
            "tenth of the passes. quality: the same updates for all of official's passes, with no early stop. On the "
            "pack's toy world both beat official, fast at least as well as quality. custom: the four numbers below. "
            "off: no steering (plain sampling, for comparisons). The numbers are used only in custom mode.",
        ),
        io.Int.Input(
            "last_steered_step", display_name="steered steps", default=10, min=0, max=10000,
            tooltip="custom mode: steer denoising steps 0 .. this-1 (official: half of the steps, e.g. 10 of 20). "
            "0 = none.",
        ),
        io.Float.Input(
            "step_size", default=5.0, min=0.0, max=1000.0, step=0.1,
            tooltip="custom mode: gradient step on the latent per iteration (official: 5; 7.5 for SD1.x; 1 for the "
            "toy world).",
        ),
        io.Int.Input(
            "iterations", default=16, min=0, max=200,
            tooltip="custom mode: forward/backward passes per steered step at most (official: 16). Each costs about "
            "one denoiser forward and backward.",
        ),
        io.Float.Input(
            "early_stop_probability", display_name="early stop p", default=1.0, min=0.01, max=1.0, step=0.01,
            tooltip="custom mode: a step's iterations stop once the classifier gives the requested relation this "
            "probability (e.g. 0.9: much faster, usually as good). 1.0 = only the official stop (p > 0.99999).",
        ),
        io.Combo.Input(
            "memory", options=list(MEMORY_MODES), default="auto", optional=True,
            tooltip="Memory of the steering passes. low: each block of the model is run again during the backward "
            "instead of keeping its activations (and the weight copies ComfyUI makes for fp8 or low-VRAM loading); "
            "same result, much less memory, about one extra forward per iteration. fast: keep everything. auto: "
            "low when keeping everything would not fit in the free memory (decided once per run).",
        ),
    ]


def steering_options(mode: str, last_steered_step: int, step_size: float, iterations: int,
                     early_stop_probability: float) -> SteeringOptions:
    """The options of the node's mode; the four numbers count only in ``custom`` mode."""
    custom = (CustomValues(last_steered_step, step_size, iterations, early_stop_probability) if mode == "custom"
              else None)
    return mode_options(mode, custom)


class _Progress:
    """One progress bar over steering iterations and sampling steps, with latent previews on sampling steps."""

    def __init__(self, model: Any, steps: int) -> None:
        self.bar = comfy.utils.ProgressBar(steps)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
        self.total, self.iterations_done, self.steps_done = steps, 0, 0

    def on_start(self, settings: SteeringSettings, num_steps: int) -> None:
        self.total = max(settings.last_step, 0) * settings.iterations + num_steps
        self.bar.update_absolute(0, self.total)

    def on_iteration(self) -> None:
        self.iterations_done += 1
        self.bar.update_absolute(self.iterations_done + self.steps_done, self.total)

    def callback(self, step: int, x0: Any, x: Any, total_steps: int) -> None:
        self.steps_done = step + 1
        preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
        self.bar.update_absolute(self.iterations_done + self.steps_done, self.total, preview)


def _summary(job: SteeringJob) -> dict[str, list[Any]]:
    """The node's report: the trace in readable lines (shown on the node) and as JSON (``l2s_trace``)."""
    return trace_report(job.trace.summary())


def _combo_error(name: str, value: Any, options: list[str], what: str) -> str | None:
    """The validation message for a combo value ComfyUI does not know, or None when it is valid."""
    if value is None or value in options:  # None: a linked input, checked when it runs
        return None
    return f"{name} {value!r} is not one of ComfyUI's {what}: {', '.join(options)}."


class LearnedSpatialSteer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_LearnedSpatialSteer",
            display_name="Learned Spatial Steer",
            category=CATEGORY,
            description="A KSampler that places objects where the prompt says. During the first steps, gradient "
            "steps on the latent push the model's own attention until the relation classifier reads the requested "
            "relation (Learn-to-Steer, WACV 2026); then the chosen sampler finishes as usual.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (SD1.x, SD2.x, SDXL, SD3 or FLUX.1)."),
                RelationClassifierType.Input("classifier", tooltip="From Load Relation Classifier."),
                io.Conditioning.Input("positive", tooltip="From Spatial Prompt Encode (it records the relation)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The random seed used for the noise."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Denoising steps."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (use 1.0 for FLUX)."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS,
                               tooltip="The sampler; steered steps run it one step at a time."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS,
                               tooltip="The noise schedule."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run (1.0 = from pure noise). Below 1 the "
                               "classifier reads the steps at their real noise level, and the preset modes steer "
                               "the part of their range the shortened schedule still covers (none at denoise 0.5 "
                               "or lower with official)."),
                *steering_inputs(),
            ],
            outputs=[
                io.Latent.Output(tooltip="The denoised latent."),
                SteeringTraceType.Output(display_name="trace",
                                         tooltip="What the classifier read at each steered step, for Attention "
                                         "Preview."),
            ],
            is_output_node=True,  # its report is re-sent when a run finds it cached (web/learn_to_steer.js shows it)
        )

    @classmethod
    def validate_inputs(cls, sampler_name: str | None = None, scheduler: str | None = None) -> bool | str:
        """Reject unknown sampler and scheduler names before the prompt is queued (HTTP 400), as KSampler does.

        ComfyUI checks combo values against their options for V1 nodes only; a V3 node must do it itself.
        """
        errors = [e for e in (
            _combo_error("sampler_name", sampler_name, list(comfy.samplers.KSampler.SAMPLERS), "samplers"),
            _combo_error("scheduler", scheduler, list(comfy.samplers.KSampler.SCHEDULERS), "schedulers"),
        ) if e is not None]
        return " ".join(errors) if errors else True

    @classmethod
    def execute(cls, model: io.Model.Type, classifier: LoadedClassifier, positive: Any, negative: Any,
                latent_image: io.Latent.Type, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                denoise: float, mode: str, last_steered_step: int, step_size: float, iterations: int,
                early_stop_probability: float, memory: str = "auto") -> io.NodeOutput:
        invalid = cls.validate_inputs(sampler_name, scheduler)  # linked names are only known now
        if invalid is not True:
            raise ValueError(str(invalid))
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                         scheduler=scheduler, denoise=denoise,
                                         model_options=model.model_options).sigmas
        progress = _Progress(model, steps)
        job = SteeringJob(classifier, steering_options(mode, last_steered_step, step_size, iterations, early_stop_probability),
                          on_iteration=progress.on_iteration, on_start=progress.on_start, memory=memory,
                          window=ScheduleWindow.tail(steps, full_steps_for_denoise(steps, denoise))
                          if denoise > 0 else None)
        sampler = steering_sampler(job, comfy.samplers.sampler_object(sampler_name))
        samples = comfy.sample.sample_custom(
            model, noise, cfg, sampler, sigmas, positive, negative, latent,
            noise_mask=latent_image.get("noise_mask"), callback=progress.callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )
        out = latent_image.copy()
        out["samples"] = samples
        return io.NodeOutput(out, job.trace, ui=_summary(job))


class LearnedSpatialSteerSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_LearnedSpatialSteerSampler",
            display_name="Learned Spatial Steer (SAMPLER)",
            category=CATEGORY,
            description="Wraps any k-diffusion SAMPLER (from KSamplerSelect) with Learn-to-Steer, for "
            "SamplerCustom / SamplerCustomAdvanced: any guider, scheduler or noise. The positive conditioning must "
            "come from Spatial Prompt Encode.",
            inputs=[
                RelationClassifierType.Input("classifier", tooltip="From Load Relation Classifier."),
                io.Sampler.Input("sampler", tooltip="The sampler that does the denoising (e.g. KSamplerSelect)."),
                *steering_inputs(),
            ],
            outputs=[
                io.Sampler.Output(tooltip="The steering sampler."),
                SteeringTraceType.Output(display_name="trace",
                                         tooltip="Filled in when the sampler runs; connect Attention Preview after "
                                         "the sampler's output is decoded."),
            ],
        )

    @classmethod
    def execute(cls, classifier: LoadedClassifier, sampler: io.Sampler.Type, mode: str, last_steered_step: int,
                step_size: float, iterations: int, early_stop_probability: float, memory: str = "auto") -> io.NodeOutput:
        job = SteeringJob(classifier, steering_options(mode, last_steered_step, step_size, iterations, early_stop_probability),
                          memory=memory)
        return io.NodeOutput(steering_sampler(job, sampler), job.trace)
