"""GOLD on skyrl-train 0.3.1: the trainer and generator (trainer.py), the GOLD ref and policy
workers (workers.py), reward mode's SkyRL functions (policy_losses.py), the hydra entrypoint (main.py).

Importing anything of this package first makes skyrl-train 0.3.1's FSDP worker modules importable
(patch_imports). A Ray worker process imports its actor class's module by name with nothing imported
before, so the fix must run on import of the module that defines each class handed to SkyRL.
"""

from ..flash_attn_standin import ensure_flash_attn


def patch_imports() -> None:
    """Make skyrl_train.workers.fsdp.fsdp_worker importable (idempotent):
    - 0.3.1's fsdp_strategy imports MixedPrecisionPolicy from its own fsdp_utils, which does not
      define it (fixed in skyrl 0.4.0); the class is torch's. Needed on every machine.
    - its model wrapper imports flash_attn at module level: the stand-in where it is not installed."""
    ensure_flash_attn()
    import skyrl_train.distributed.fsdp_utils as fsdp_utils

    if not hasattr(fsdp_utils, "MixedPrecisionPolicy"):
        from torch.distributed.fsdp import MixedPrecisionPolicy

        fsdp_utils.MixedPrecisionPolicy = MixedPrecisionPolicy


patch_imports()
