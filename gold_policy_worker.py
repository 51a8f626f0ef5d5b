"""The GOLD policy worker (the student side) of the installed SkyRL: adapters/skyrl040/workers.py or
adapters/skyrl031/workers.py. SkyRL is handed the class from its defining module."""

from .adapters import SKYRL040, require_skyrl

if require_skyrl() == SKYRL040:
    from .adapters.skyrl040.workers import GOLDPolicyWorker, GOLDPolicyWorkerBase
else:
    from .adapters.skyrl031.workers import GOLDPolicyWorker, GOLDPolicyWorkerBase

__all__ = ["GOLDPolicyWorker", "GOLDPolicyWorkerBase"]
