"""Remote AI calls → energy and emissions, estimated with EcoLogits.

EcoLogits (``pip install 'sci-agent[ai]'``) models one call from the provider, the
model, the output tokens and the request latency: the GPUs' energy per token (a
regression on the model's active parameters), the server's share over the generation
time, the provider's PUE, and the electricity mix of the region it assumes for that
provider (``USA`` for OpenAI and Anthropic, ``SWE`` for Mistral...). It is imported on
the first calls only, so an agent without AI calls never loads it.

Per (app, provider, model) and interval: the calls not served from a cache are priced
as ``count`` calls of their mean output tokens and mean latency (EcoLogits' energy is
linear in the tokens, so this is the sum whenever the calls' latencies do not cap their
generation time). Energy is EcoLogits' range (min, max) and its middle; usage carbon is
that energy × the mix (E × I, which is EcoLogits' usage GWP), embodied carbon its
embodied GWP (M). A model or provider EcoLogits does not know leaves the calls
*unestimated*: counted and reported as such, never priced at zero silently.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.records import RemoteInference
from agent.remote.calls import CallKey, CallSums

log = logging.getLogger("sci_agent.remote")

INSTALL_HINT = "install the optional extra: pip install 'sci-agent[ai]'"
#: Our provider names → EcoLogits' (its tracers' names are accepted as they are).
PROVIDER_ALIASES = {
    "google": "google_genai",
    "gemini": "google_genai",
    "mistral": "mistralai",
    "huggingface": "huggingface_hub",
}


@dataclass(frozen=True, slots=True)
class CallEstimate:
    """One call's estimate: energy range (kWh), carbon (g) and the mix it assumed."""

    energy_kwh_min: float
    energy_kwh_max: float
    embodied_g: float
    mix_zone: str
    mix_gco2_per_kwh: float

    @property
    def energy_kwh(self) -> float:
        return (self.energy_kwh_min + self.energy_kwh_max) / 2

    @property
    def usage_g(self) -> float:
        """E × I with the provider region's mix."""
        return self.energy_kwh * self.mix_gco2_per_kwh


class EstimateError(Exception):
    """A call cannot be estimated; the message says why (unknown model, no EcoLogits)."""


class EcoLogitsEstimator:
    """Prices calls with EcoLogits' ``llm_impacts``; the library loads on first use."""

    def __init__(self) -> None:
        self._lib: Any = None
        self._missing: str | None = None
        self._warned: set[str] = set()
        self.version = ""

    @property
    def method(self) -> str:
        """The method's name, as recorded with each estimate."""
        return f"EcoLogits {self.version} llm_impacts".replace("  ", " ")

    def estimate_call(
        self, provider: str, model: str, output_tokens: float, latency_s: float
    ) -> CallEstimate:
        """One call's estimate, or ``EstimateError`` naming why there is none."""
        lib = self._load()
        name = PROVIDER_ALIASES.get(provider, provider)
        config = lib.PROVIDER_CONFIG_MAP.get(name)
        if config is None:
            known = ", ".join(sorted(lib.PROVIDER_CONFIG_MAP))
            raise EstimateError(f"provider {provider!r} is unknown to EcoLogits (known: {known})")
        impacts = lib.llm_impacts(
            provider=name,
            model_name=model,
            output_token_count=max(0.0, output_tokens),
            request_latency=latency_s if latency_s > 0 else math.inf,
        )
        if impacts.errors:
            raise EstimateError("; ".join(str(e.message) for e in impacts.errors))
        zone = config.datacenter_location or "WOR"
        mix = lib.electricity_mixes.find_electricity_mix(zone=zone)
        low, high = _bounds(impacts.energy.value)
        return CallEstimate(
            energy_kwh_min=low,
            energy_kwh_max=high,
            embodied_g=_middle(impacts.embodied.gwp.value) * 1000.0,
            mix_zone=zone,
            mix_gco2_per_kwh=float(mix.gwp) * 1000.0,
        )

    def estimate(self, calls: Mapping[CallKey, CallSums]) -> tuple[RemoteInference, ...]:
        """The interval's calls as one ``RemoteInference`` per (app, provider, model)."""
        groups: dict[tuple[str, str, str], dict[bool, CallSums]] = {}
        for key, sums in calls.items():
            group = groups.setdefault((key.app, key.provider, key.model), {})
            group[key.cached] = group.get(key.cached, CallSums()) + sums
        return tuple(
            self._priced(app, provider, model, parts.get(False, CallSums()), parts.get(True))
            for (app, provider, model), parts in sorted(groups.items())
        )

    def _priced(
        self, app: str, provider: str, model: str, remote: CallSums, cached: CallSums | None
    ) -> RemoteInference:
        hits = cached.count if cached is not None else 0.0
        row = RemoteInference(
            app=app,
            provider=provider,
            model=model,
            calls=remote.count + hits,
            cached_calls=hits,
            input_tokens=remote.input_tokens,
            output_tokens=remote.output_tokens,
            unestimated_calls=0.0,
            energy_kwh=0.0,
            energy_kwh_min=0.0,
            energy_kwh_max=0.0,
            usage_g=0.0,
            embodied_g=0.0,
            method=self.method,
        )
        if remote.count <= 0:  # only cache hits: no remote energy, nothing to price
            return row
        n = remote.count
        mean_latency = remote.latency_s / remote.timed if remote.timed > 0 else 0.0
        try:
            one = self.estimate_call(provider, model, remote.output_tokens / n, mean_latency)
        except EstimateError as exc:
            where = f"{provider}/{model}"
            self._warn_once(where, f"calls to {where} unestimated: {exc}")
            return replace(row, unestimated_calls=n, method=self.method, error=str(exc))
        return replace(
            row,
            energy_kwh=one.energy_kwh * n,
            energy_kwh_min=one.energy_kwh_min * n,
            energy_kwh_max=one.energy_kwh_max * n,
            usage_g=one.usage_g * n,
            embodied_g=one.embodied_g * n,
            mix_zone=one.mix_zone,
            mix_gco2_per_kwh=one.mix_gco2_per_kwh,
            method=self.method,
        )

    def _load(self) -> Any:
        """EcoLogits' pieces, imported once; ``EstimateError`` when it is not installed."""
        if self._lib is not None:
            return self._lib
        if self._missing is not None:
            raise EstimateError(self._missing)
        try:
            utils = importlib.import_module("ecologits.tracers.utils")
            mixes = importlib.import_module("ecologits.electricity_mix_repository")
            version = importlib.import_module("ecologits").__version__
        except ImportError as exc:
            self._missing = f"EcoLogits is not installed ({exc}); {INSTALL_HINT}"
            log.warning("remote calls: %s; calls are counted but unestimated", self._missing)
            raise EstimateError(self._missing) from None
        self.version = str(version)
        self._lib = _Lib(utils.llm_impacts, utils.PROVIDER_CONFIG_MAP, mixes.electricity_mixes)
        return self._lib

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned and len(self._warned) < 1000:
            self._warned.add(key)
            log.warning("remote calls: %s", message)


@dataclass(frozen=True, slots=True)
class _Lib:
    llm_impacts: Any
    PROVIDER_CONFIG_MAP: Any
    electricity_mixes: Any


def _bounds(value: Any) -> tuple[float, float]:
    """(min, max) of an EcoLogits value: a ``RangeValue`` or a plain number."""
    if hasattr(value, "min") and hasattr(value, "max"):
        return float(value.min), float(value.max)
    return float(value), float(value)


def _middle(value: Any) -> float:
    low, high = _bounds(value)
    return (low + high) / 2
