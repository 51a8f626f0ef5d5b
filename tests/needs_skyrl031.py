"""Imported first by tests of the skyrl-train 0.3.1 adapter: elsewhere their module is skipped, saying why."""

import pytest

pytest.importorskip(
    "skyrl_train",
    reason="skyrl-train 0.3.1 test: skyrl_train is not installed in this environment (the skyrl 0.4.0 environment runs tests/test_skyrl040_config.py and the version-independent tests)",
)
