"""Keys with a fixed set of values are typed ``Literal`` and checked when the file is read."""

from __future__ import annotations

from typing import Literal, get_args, get_origin, get_type_hints

import pytest

from agent import config
from agent.config import ConfigError, SciConfig
from agent.scoring import SHARE_POLICIES, Scorer


@pytest.mark.parametrize("value", ["capacity", "full", "separate", "proportional"])
def test_every_idle_policy_is_accepted(value: str) -> None:
    assert config.loads(f'[sci]\nidle_policy = "{value}"').sci.idle_policy == value


@pytest.mark.parametrize(
    ("text", "shown"),
    [('"fair"', "'fair'"), ("3", "3"), ('["full"]', "['full']"), ('"Full"', "'Full'")],
)
def test_a_bad_idle_policy_names_the_key_the_choices_and_the_value(text: str, shown: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.loads(f"[sci]\nidle_policy = {text}")
    assert str(err.value).endswith(
        f": sci.idle_policy: must be one of capacity, full, separate, proportional, got {shown}"
    )


def test_idle_policy_is_a_literal_and_the_scorer_knows_each_value() -> None:
    hint = get_type_hints(SciConfig)["idle_policy"]
    assert get_origin(hint) is Literal
    for name in get_args(hint):
        assert Scorer({}, 0.0, 4.0, name).idle_policy in SHARE_POLICIES
