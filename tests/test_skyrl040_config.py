"""The GOLD run config on skyrl 0.4.0: composition, overrides, the gold section reaching the
workers with its defaults, start-up validation naming key and fix, and `--cfg job`."""

from . import needs_skyrl040  # noqa: F401  (first: skips this module without skyrl 0.4.0)

import dataclasses
import pickle

import pytest

from gold_distillation.adapters.skyrl040.config import RENAMED_KEYS, config_from_cli, validate_run_config
from gold_distillation.adapters.skyrl040.main import main
from gold_distillation.config import GOLDConfig
from skyrl.train.utils import validate_cfg

from .skyrl040_standins import gold_cfg
from .standins import LLAMA, QWEN


def test_partial_gold_overrides_keep_the_other_defaults_and_reach_the_workers():
    cfg = gold_cfg(LLAMA, QWEN, "gold.mode=loss", "gold.teacher_topk=null", "gold.beta=0.25", "gold.beta=0.75")
    expected = dataclasses.replace(GOLDConfig(), mode="loss", teacher_topk=None, beta=0.75)  # last value wins
    assert cfg.gold == expected
    # Workers get cfg.trainer only: the section is there, the same object, and survives pickling.
    assert cfg.trainer.gold is cfg.gold
    assert pickle.loads(pickle.dumps(cfg.trainer)).gold == expected
    # GOLD's SkyRL settings are the defaults; SkyRL's own are untouched.
    algorithm = cfg.trainer.algorithm
    assert (algorithm.advantage_estimator, algorithm.policy_loss_type) == ("no_op", "importance_sampling")
    assert algorithm.use_kl_in_reward and not algorithm.use_kl_loss and not cfg.trainer.remove_microbatch_padding
    # Reward mode's reduction is SkyRL's on-policy distillation example's, max_seq_len as 0.3.1 derives it.
    assert algorithm.loss_reduction == "seq_mean_token_sum_norm"
    assert algorithm.max_seq_len == cfg.generator.max_input_length + cfg.generator.sampling_params.max_generate_length
    assert cfg.trainer.ref.model.path == QWEN and cfg.trainer.policy.model.path == LLAMA
    validate_run_config(cfg)
    validate_cfg(cfg)


@pytest.mark.parametrize("args,match", [
    (["gold.mdoe=loss"], r"gold\.mdoe: unknown key\. Fix: use one of gold\.mode"),
    (["generator.num_inference_engines=2"], r"generator\.num_inference_engines: renamed.*Fix: use generator\.inference_engine\.num_engines"),
    (["generator.backend=vllm"], r"Fix: use generator\.inference_engine\.backend"),
    (["trainer.gold.mode=loss"], r"trainer\.gold.*Fix: set gold\.KEY=VALUE"),
])
def test_bad_keys_are_refused_naming_the_fix(args, match):
    with pytest.raises(ValueError, match=match):
        config_from_cli([f"trainer.policy.model.path={LLAMA}", f"trainer.ref.model.path={QWEN}", *args])


def test_every_renamed_key_names_an_existing_key():
    cfg = gold_cfg(LLAMA, QWEN)
    for new in RENAMED_KEYS.values():
        node = cfg
        for part in new.split("."):
            node = getattr(node, part)


@pytest.mark.parametrize("overrides,key", [
    (["gold.beta=2"], "gold.beta"),
    (["trainer.algorithm.use_kl_in_reward=false"], "trainer.algorithm.use_kl_in_reward"),
    (["trainer.algorithm.use_kl_loss=true"], "trainer.algorithm.use_kl_loss"),
    (["trainer.algorithm.advantage_estimator=grpo"], "trainer.algorithm.advantage_estimator"),
    (["trainer.algorithm.policy_loss_type=regular"], "trainer.algorithm.policy_loss_type"),
    (["trainer.remove_microbatch_padding=true"], "trainer.remove_microbatch_padding"),
    (["gold.mode=loss", "trainer.max_tokens_per_microbatch=4096"], "trainer.max_tokens_per_microbatch"),
    (["gold.mode=loss", "gold.loss_reduction=null", "trainer.algorithm.loss_reduction=prompt_mean"], "gold.loss_reduction"),
])
def test_validation_names_the_key_and_the_fix(overrides, key):
    with pytest.raises(ValueError, match=rf"^{key.replace('.', r'[.]')}: .*(Fix: |set it )"):
        validate_run_config(gold_cfg(LLAMA, QWEN, *overrides))


def test_loss_mode_accepts_its_settings():
    validate_run_config(gold_cfg(LLAMA, QWEN, "gold.mode=loss", "trainer.algorithm.advantage_estimator=grpo",
                                 "trainer.algorithm.loss_reduction=prompt_mean", "gold.loss_reduction=token_mean"))


def test_teacher_must_be_named():
    cfg = config_from_cli([f"trainer.policy.model.path={LLAMA}"])
    # SkyRL would default the ref model to the student; GOLD keeps it unset and says what to do.
    assert cfg.trainer.ref.model.path is None
    with pytest.raises(ValueError, match=r"^trainer\.ref\.model\.path: set it to the teacher"):
        validate_run_config(cfg)


def test_cfg_job_prints_the_resolved_config(capsys):
    main(["--cfg", "job", f"trainer.policy.model.path={LLAMA}", f"trainer.ref.model.path={QWEN}", "gold.mode=loss"])
    printed = capsys.readouterr().out
    assert "\ngold:\n  mode: loss\n  merge: geometric\n" in printed
    assert "advantage_estimator: no_op" in printed and f"path: {QWEN}" in printed
