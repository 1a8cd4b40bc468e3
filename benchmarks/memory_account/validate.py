"""The account checked against measured CPU memory: predicted on the meta device vs measured on CPU.

For each case (an architecture at a resolution, fp32 weights as on CPU), each pass is accounted on the meta device
(the prediction, with the attention modelled as on CPU: the math path) and measured in a fresh process on CPU
(:mod:`.measure`: peak RSS growth of the pack's real passes, and the tracker's count on real tensors). Figures are
bytes above the weights (the weights are in the RSS before the pass).

Two differences are expected and are not errors of the account. The meta account copies the text conditioning to
the device at every forward, as ComfyUI does on a GPU; on CPU the conditioning is already there (tiny SD3: 4.8 MiB
of 4096-wide T5 features). CPU kernels allocate memory that is not a tensor (oneDNN convolutions reorder their
weights: about 66 MiB for a 1280-channel 3x3 convolution), which the RSS shows and no tensor count can; on a GPU
the equivalent (cuBLAS / cuDNN workspaces) is part of the CUDA-context allowance of the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .account import account_pass
from .architectures import ARCHITECTURES, Architecture, tiny_architecture
from .build import build_setup
from .measure import measure_in_subprocess

logger = logging.getLogger(__name__)

MIB = 1024**2

DEFAULT_CASES: tuple[str, ...] = ("tiny_sd1:512", "tiny_sdxl:512", "tiny_sd3:256", "tiny_flux:256", "sd15:256",
                                  "sd21:256")
"""``arch:resolution``; ``tiny_<family>`` is the integration tests' tiny model of that family."""


def resolve_case(m: SimpleNamespace, case: str) -> tuple[Architecture, int]:
    """``"sd15:256"`` -> (SD1.5, 256); ``"tiny_flux:256"`` -> (the tiny FLUX, 256)."""
    name, _, resolution = case.partition(":")
    if not resolution.isdigit() or int(resolution) % 16:
        raise ValueError(f"A case is arch:resolution with a resolution divisible by 16; got {case!r}.")
    if name.startswith("tiny_"):
        family = name.removeprefix("tiny_")
        return tiny_architecture(family, m.tiny_specs.get_spec(family)), int(resolution)
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)} and tiny_<family>.")
    return ARCHITECTURES[name], int(resolution)


@dataclass(frozen=True)
class Check:
    """One pass of one case: predicted (meta), tracked (real CPU tensors) and measured (RSS growth), bytes."""

    case: str
    name: str
    predicted: int
    tracked: int
    measured: int

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted - self.measured) / max(1, self.measured)

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "pass": self.name, "predicted_bytes": self.predicted,
                "tracked_bytes": self.tracked, "measured_bytes": self.measured, "error": self.error}


def validate(m: SimpleNamespace, cases: list[str], attention: str = "math") -> list[Check]:
    """Predict each case on the meta device, measure it on CPU, and pair the figures."""
    checks = []
    for case in cases:
        arch, resolution = resolve_case(m, case)
        setup = build_setup(m, arch, resolution, "fp32", "meta")
        predicted = {name: account_pass(setup, name, attention).peak_bytes for name in ("plain", "fast", "low")}
        del setup
        measured = measure_in_subprocess(case, attention)
        for name, figure in predicted.items():
            checks.append(Check(case, name, figure, measured[name]["tracked_bytes"],
                                measured[name]["measured_bytes"]))
    return checks


def markdown_checks(checks: list[Check]) -> str:
    """The validation table (MiB above the weights)."""
    lines = ["| Case (fp32, CPU) | Pass | Predicted on meta (MiB) | Tracked on CPU (MiB) | Measured RSS growth (MiB) "
             "| Predicted vs measured |", "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c.case} | {c.name} | {c.predicted / MIB:.1f} | {c.tracked / MIB:.1f} "
                     f"| {c.measured / MIB:.1f} | {c.error:+.1%} |")
    return "\n".join(lines)
