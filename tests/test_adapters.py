"""Feature detection of the installed SkyRL (runs in every environment)."""

import importlib.util

from gold_distillation.adapters import SKYRL031, SKYRL040, installed_skyrl


def test_detects_the_skyrl_this_environment_has():
    has_040 = importlib.util.find_spec("skyrl") is not None and importlib.util.find_spec("skyrl.train") is not None
    has_031 = importlib.util.find_spec("skyrl_train") is not None
    assert installed_skyrl() == (SKYRL040 if has_040 else SKYRL031 if has_031 else None)


def test_the_shared_trainer_hooks_import_no_skyrl_trainer_package():
    """adapters/trainer_common.py is the trainer of both SkyRL versions: importing it (in a fresh
    process) loads neither skyrl-train 0.3.1's package nor skyrl 0.4.0's, and both adapters' trainers
    take their step from it."""
    import subprocess
    import sys

    code = (
        "import sys, gold_distillation.adapters.trainer_common as common\n"
        "assert hasattr(common, 'GOLDTrainerMixin')\n"
        "print(sorted(m for m in sys.modules if m == 'skyrl_train' or m.startswith(('skyrl_train.', 'skyrl.')) or m == 'skyrl'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    found = installed_skyrl()
    if found is not None:
        from gold_distillation.adapters.trainer_common import GOLDTrainerMixin
        from gold_distillation.main_gold_distill import GOLDDistillationTrainer

        assert GOLDDistillationTrainer.__mro__[1] is GOLDTrainerMixin
        shared = {"generate", "convert_to_training_input", "fwd_logprobs_values_reward", "apply_reward_kl_penalty",
                  "train_critic_and_policy", "build_models"}
        assert shared.isdisjoint(vars(GOLDDistillationTrainer))  # the adapter defines only its hooks
