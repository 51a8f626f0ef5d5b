"""Per-SkyRL-version glue, picked by feature detection (the one place that looks at what is installed).

skyrl 0.4.0 installs the package `skyrl` (with `skyrl.train`); skyrl-train 0.3.1 installs
`skyrl_train`. Everything outside `adapters/` is the version-independent core and imports no SkyRL.
"""

from __future__ import annotations

import importlib.util

SKYRL040 = "skyrl040"
SKYRL031 = "skyrl031"


def installed_skyrl() -> str | None:
    """Which SkyRL this environment has: SKYRL040, SKYRL031, or None (core only)."""
    if importlib.util.find_spec("skyrl") is not None and importlib.util.find_spec("skyrl.train") is not None:
        return SKYRL040
    if importlib.util.find_spec("skyrl_train") is not None:
        return SKYRL031
    return None


def require_skyrl() -> str:
    """installed_skyrl(), or a clear error naming both supported installs."""
    found = installed_skyrl()
    if found is None:
        raise ImportError(
            "GOLD's SkyRL trainer needs SkyRL. Fix: install skyrl==0.4.0 (Python 3.12, transformers 5) or "
            "skyrl-train==0.3.1 (transformers 4.57), e.g. with scripts/setup_env.sh"
        )
    return found
