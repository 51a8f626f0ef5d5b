"""Imported first by tests of the skyrl 0.4.0 adapter: elsewhere their module is skipped, saying why."""

import pytest

pytest.importorskip(
    "skyrl.train",
    reason="skyrl 0.4.0 test: skyrl is not installed in this environment (the skyrl-train 0.3.1 environment runs tests/test_config.py and the version-independent tests)",
)
