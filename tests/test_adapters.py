"""Feature detection of the installed SkyRL (runs in every environment)."""

import importlib.util

from gold_distillation.adapters import SKYRL031, SKYRL040, installed_skyrl


def test_detects_the_skyrl_this_environment_has():
    has_040 = importlib.util.find_spec("skyrl") is not None and importlib.util.find_spec("skyrl.train") is not None
    has_031 = importlib.util.find_spec("skyrl_train") is not None
    assert installed_skyrl() == (SKYRL040 if has_040 else SKYRL031 if has_031 else None)
