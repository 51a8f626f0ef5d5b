"""GOLD on skyrl 0.4.0: the trainer (trainer.py), the GOLD ref and policy workers (workers.py),
the `gold` config section and its start-up checks (config.py), the entrypoint (main.py).

GOLD's own work in each step is gold_steps' (shared with the 0.3.1 adapter); this package only
moves batches the 0.4.0 way: worker calls through the trainer's `dispatch`, the ref worker's
payload as per-sample outputs, the loss-mode GOLD loss inside the policy worker's forward_backward.
"""

import importlib.util
import sys


def patch_imports() -> None:
    """Make SkyRL 0.4.0's FSDP worker modules importable where flash_attn is not installed (CPU
    tests, the CPU demo): its model wrapper imports two padding helpers from flash_attn at module
    level. On GPU machines with flash_attn nothing is replaced."""
    if "flash_attn" not in sys.modules and importlib.util.find_spec("flash_attn") is None:
        from ...skyrl_compat import _install_flash_attn_stand_in

        _install_flash_attn_stand_in()
