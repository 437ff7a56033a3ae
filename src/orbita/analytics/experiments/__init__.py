"""Experiments: every journey split, A/B variant and holdout, measured (see results.py for
the statistics of one experiment, data.py for reading them from a workspace's stores)."""

from orbita.analytics.experiments.results import (
    ArmData,
    ArmSummary,
    Comparison,
    ExperimentResult,
    Guardrail,
    Verdict,
    analyze,
    winner,
)
from orbita.analytics.experiments.stats import Interval, SampleRatio, SequentialLook

__all__ = [
    "ArmData",
    "ArmSummary",
    "Comparison",
    "ExperimentResult",
    "Guardrail",
    "Interval",
    "SampleRatio",
    "SequentialLook",
    "Verdict",
    "analyze",
    "winner",
]
