"""The pack's custom socket types, declared once."""

from __future__ import annotations

from comfy_api.latest import io

# Payload: l2s_core.checkpoint.LoadedClassifier
RelationClassifierType = io.Custom("L2S_CLASSIFIER")
# Payload: nodes.steering.SteeringTrace (filled in when the sampler runs)
SteeringTraceType = io.Custom("L2S_TRACE")

CATEGORY = "learn_to_steer"
