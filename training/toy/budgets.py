"""Steering variants of the toy benchmark, written as short specs: ``official``, ``early:0.9+keep``, ``rel:0.02``.

A spec is one or more terms joined by ``+``, each changing the official settings of the classifier's family:

* ``official``: the published loop (no change; may be left out of a combination).
* ``fast`` / ``quality``: the node's preset of that name (:data:`l2s_core.presets.PRESETS`); put it first, the terms
  after it change it.
* ``early:P``: a sample stops its step once the classifier gives the requested relation probability ``P``.
* ``steps:N``: steer only the first ``N`` steps.
* ``share:F``: steer the first share ``F`` (0-1] of the official steered steps.
* ``iters:N``: at most ``N`` iterations per steered step.
* ``size:S``: the official gradient step with step size ``S``.
* ``rel:F``: every update moves the latent by ``F`` times its standard deviation (RMS), in the gradient's direction.
* ``keep``: restore each sample's mean and standard deviation after every update.
* ``settle``: with ``early:P``, an image whose step starts at probability ``P`` is not steered at later steps.
* ``blur:S``: blur the gradient with a Gaussian of ``S`` latent cells before it is used.
* ``overlap:W``: add ``W`` x the subject/object attention overlap (:mod:`l2s_core.overlap`) to the loss.

``early`` and ``short`` alone keep their earlier meaning (``early:0.9`` and ``steps:3``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from l2s_core.presets import PRESETS
from l2s_core.settings import SteeringOptions
from l2s_core.update_rule import UpdateRule

ALIASES = {"early": "early:0.9", "short": "steps:3"}

NUMBER_TERMS: dict[str, tuple[str, str, type, str]] = {
    "steps": ("options", "last_step", int, "first {} steps"),
    "iters": ("options", "iterations", int, "{} iterations"),
    "size": ("options", "step_size", float, "step size {}"),
    "overlap": ("options", "overlap_weight", float, "overlap term x{}"),
    "rel": ("rule", "relative_step", float, "steps of {} std"),
    "blur": ("rule", "smooth_sigma", float, "gradient blurred {} cells"),
}
"""The terms ``name:number`` that set one field: name -> (``"options"`` or ``"rule"``, the field, int or float,
the label with ``{}`` for the number as written)."""


@dataclass(frozen=True)
class Budget:
    """One steering row of the benchmark: its spec, its label and the options it resolves."""

    spec: str
    label: str
    options: SteeringOptions


def _number(term: str, value: str, kind: type) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"Budget term {term!r}: {value!r} is not {'an integer' if kind is int else 'a number'}."
                         ) from None
    if number <= 0:
        raise ValueError(f"Budget term {term!r}: the value must be > 0.")
    return number


def _fraction(term: str, value: str, what: str) -> float:
    """A number in (0, 1], e.g. a probability or a share of the steered steps."""
    number = float(_number(term, value, float))
    if number > 1:
        raise ValueError(f"Budget term {term!r}: {what} is at most 1.")
    return number


def parse_budget(spec: str) -> Budget:
    """The :class:`Budget` of one spec (see the module docstring).

    Raises:
        ValueError: an unknown term or a bad value, with the grammar in the message.
    """
    spec = ALIASES.get(spec.strip(), spec.strip())
    options = SteeringOptions()
    rule = UpdateRule()
    labels: list[str] = []
    for term in (t.strip() for t in spec.split("+")):
        name, _, value = term.partition(":")
        if name == "official" and not value:
            continue
        if name in ("fast", "quality") and not value:
            options, rule = PRESETS[name], PRESETS[name].update_rule
            labels.append(f"{name} preset")
            continue
        if name == "early":
            p = _fraction(term, value, "a probability")
            options = replace(options, early_stop_probability=p)
            labels.append(f"early stop p>={p:g}")
        elif name in NUMBER_TERMS:
            target, field, kind, label = NUMBER_TERMS[name]
            number = _number(term, value, kind)
            if target == "rule":
                rule = replace(rule, **{field: number})
            else:
                options = replace(options, **{field: number})
            labels.append(label.format(value))
        elif name == "share":
            share = _fraction(term, value, "a share")
            options = replace(options, steered_share=share)
            labels.append(f"first {share:g} of the steered steps")
        elif name == "settle" and not value:
            options = replace(options, settle=True)
            labels.append("settled images not steered again")
        elif name == "keep" and not value:
            rule = replace(rule, keep_statistics=True)
            labels.append("statistics kept")
        else:
            raise ValueError(f"Unknown budget term {term!r} in {spec!r}. Terms: official, fast, quality, early:P, "
                             "steps:N, share:F, iters:N, size:S, rel:F, keep, settle, blur:S, overlap:W; join them "
                             "with '+', e.g. 'early:0.9+keep'.")
    options = replace(options, update_rule=rule)
    label = "steered: " + (", ".join(labels) if labels else "official schedule")
    return Budget(spec, label, options)
