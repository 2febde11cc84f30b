"""Remote AI calls an app makes (hosted models), counted and estimated into its SCI."""

from __future__ import annotations

from agent.remote.calls import CallKey, CallLedger, CallSums, check_call
from agent.remote.estimate import CallEstimate, EcoLogitsEstimator, EstimateError

__all__ = [
    "CallEstimate",
    "CallKey",
    "CallLedger",
    "CallSums",
    "EcoLogitsEstimator",
    "EstimateError",
    "check_call",
]
