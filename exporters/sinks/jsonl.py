"""The ``[jsonl]`` sink: one JSON object per interval to a file or stdout (``exporters.jsonl``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporters.sinks import SINKS

if TYPE_CHECKING:
    from agent.config import Config
    from exporters.base import Sink


@dataclass(frozen=True)
class JsonlConfig:
    """One JSON object per interval (the ``once --json`` object) to a file or stdout."""

    path: str | None = None  # "-" for stdout; unset: off


def _build_jsonl(config: Config) -> Sink | None:
    from exporters.jsonl import JsonlSink

    path: str | None = config.jsonl.path
    return JsonlSink(path) if path else None


SINKS.register("jsonl", _build_jsonl, section=JsonlConfig, order=40)
