"""The GOLD ref worker (the teacher side) of the installed SkyRL: adapters/skyrl040/workers.py or
adapters/skyrl031/workers.py. SkyRL is handed the class from its defining module."""

from .adapters import SKYRL040, require_skyrl

if require_skyrl() == SKYRL040:
    from .adapters.skyrl040.workers import GOLDRefWorker, GOLDRefWorkerBase
else:
    from .adapters.skyrl031.workers import GOLDRefWorker, GOLDRefWorkerBase

__all__ = ["GOLDRefWorker", "GOLDRefWorkerBase"]
