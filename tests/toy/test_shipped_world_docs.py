"""The figures the docs quote about the shipped toy world come from the shipped files themselves."""

from __future__ import annotations

import re
from pathlib import Path

from l2s_core.checkpoint import load_classifier

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = ROOT / "toy_world" / "classifiers" / "toy_relation_classifier.safetensors"
MODEL = ROOT / "toy_world" / "models" / "toy_world.safetensors"


def _classifier_metrics() -> dict:
    return load_classifier(CLASSIFIER).provenance["metrics"]


def test_toy_world_readme_quotes_the_shipped_classifier_accuracy() -> None:
    metrics = _classifier_metrics()
    text = (ROOT / "toy_world" / "README.md").read_text(encoding="utf-8")
    found = re.search(r"validation accuracy (\d\.\d+), test (\d\.\d+)", text)
    assert found, "toy_world/README.md no longer states the classifier's validation and test accuracy"
    assert float(found.group(1)) == round(metrics["val_accuracy"], 3)
    assert float(found.group(2)) == round(metrics["test_accuracy"], 3)


def test_main_readme_quotes_the_shipped_classifier_accuracy_and_file_sizes() -> None:
    metrics = _classifier_metrics()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"Validation accuracy (\d\.\d+) .*?test (\d\.\d+)", text)
    assert found, "README.md no longer states the toy classifier's validation and test accuracy"
    assert float(found.group(1)) == round(metrics["val_accuracy"], 3)
    assert float(found.group(2)) == round(metrics["test_accuracy"], 3)
    sizes = re.search(r"\((\d+\.\d) MB model \+ (\d+\.\d) MB classifier\)", text)
    assert sizes, "README.md no longer states the shipped file sizes"
    assert float(sizes.group(1)) == round(MODEL.stat().st_size / 1e6, 1)
    assert float(sizes.group(2)) == round(CLASSIFIER.stat().st_size / 1e6, 1)
