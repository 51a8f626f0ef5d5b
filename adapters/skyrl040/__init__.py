"""GOLD on skyrl 0.4.0: the trainer and generator (trainer.py), the GOLD ref and policy workers
(workers.py), the `gold` config section and its start-up checks (config.py), the entrypoint (main.py).

GOLD's own work in each step is gold_steps' (shared with the 0.3.1 adapter); this package only
moves batches the 0.4.0 way: worker calls through the trainer's `dispatch`, the ref worker's
payload as per-sample outputs, the loss-mode GOLD loss inside the policy worker's forward_backward.

Importing anything of this package first makes SkyRL 0.4.0's FSDP worker modules importable where
flash_attn is not installed (CPU tests, the CPU demo): its model wrapper imports two padding helpers
from flash_attn at module level. On GPU machines with flash_attn nothing is replaced.
"""

from ..flash_attn_standin import ensure_flash_attn

ensure_flash_attn()
