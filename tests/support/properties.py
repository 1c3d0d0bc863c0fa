"""
The Hypothesis settings of ilchat's property tests: bounded for CI, the same examples every run.

Import ``settings``/``given`` from here (loading this module loads the profile). Set
``HYPOTHESIS_PROFILE=thorough`` to search longer (and with fresh examples) on a developer machine.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies

__all__ = ["given", "settings", "strategies", "json_values"]

settings.register_profile(
    "ilchat",
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ilchat"))

#: Text JSON can carry in every encoding: no UTF-16 surrogates.
clean_text = strategies.text(strategies.characters(blacklist_categories=("Cs",)), max_size=30)

#: JSON values strict decoding accepts: finite numbers, short integers, text without surrogates,
#: at most a few levels deep.
json_values = strategies.recursive(
    strategies.none()
    | strategies.booleans()
    | strategies.integers(min_value=-(10**30), max_value=10**30)
    | strategies.floats(allow_nan=False, allow_infinity=False)
    | clean_text,
    lambda children: strategies.lists(children, max_size=5)
    | strategies.dictionaries(clean_text, children, max_size=5),
    max_leaves=20,
)
