"""The hydra config (skyrl-train 0.3.1): composition, overrides, start-up validation."""

from . import needs_skyrl031  # noqa: F401  (first: skips this module without skyrl-train 0.3.1)

import pytest
from hydra.errors import ConfigCompositionException

from gold_distillation.config import validate_run_config
from gold_distillation.gold_setup import load_tokenizer

from .skyrl_standins import gold_cfg, plain_trainer
from .standins import LLAMA, QWEN


def test_config_composes_with_gold_overrides():
    cfg = gold_cfg(LLAMA, QWEN, "gold.mode=loss", "gold.beta=0.2", "gold.hybrid=true", "gold.teacher_topk=null")
    validate_run_config(cfg)
    assert (cfg.gold.mode, cfg.gold.beta, cfg.gold.hybrid, cfg.gold.teacher_topk) == ("loss", 0.2, True, None)
    assert cfg.trainer.algorithm.advantage_estimator == "no_op"
    assert cfg.trainer.algorithm.policy_loss_type == "importance_sampling"
    assert cfg.gold.teacher_trust_remote_code is False and cfg.gold.student_trust_remote_code is False


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["gold.mode=distill"], "gold.mode"),
        (["gold.merge=sum"], "gold.merge"),
        (["gold.beta=1.5"], "gold.beta"),
        (["gold.teacher_topk=0"], "gold.teacher_topk"),
        (["gold.student_temperature=0"], "gold.student_temperature"),
        (["gold.matched_weight=-1"], "gold.matched_weight"),
        (["gold.loss_reduction=sum"], "gold.loss_reduction"),
        (["gold.teacher_end_token=''"], "gold.teacher_end_token"),
        (["trainer.ref.model.path=null"], "trainer.ref.model.path"),
        (["trainer.algorithm.use_kl_in_reward=false"], "trainer.algorithm.use_kl_in_reward"),
        (["trainer.algorithm.advantage_estimator=grpo"], "trainer.algorithm.advantage_estimator"),
        (["trainer.algorithm.policy_loss_type=regular"], "trainer.algorithm.policy_loss_type"),
        (["gold.mode=loss", "trainer.use_sample_packing=true"], "trainer.use_sample_packing"),
        (["trainer.use_sample_packing=true"], "trainer.use_sample_packing"),
        (["trainer.ref.sequence_parallel_size=2"], "trainer.ref.sequence_parallel_size"),
        (["gold.mode=loss", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size"),
        (["gold.uld_reward_coef=0.5", "trainer.policy.sequence_parallel_size=2"], "trainer.policy.sequence_parallel_size"),
        (["trainer.update_ref_every_epoch=true"], "trainer.update_ref_every_epoch"),
        (["trainer.strategy=deepspeed"], "trainer.strategy"),
        (["trainer.strategy=megatron"], "trainer.strategy"),
        (["trainer.critic.model.path=/models/critic"], "trainer.critic.model.path"),
        (["generator.step_wise_trajectories=true"], "generator.step_wise_trajectories"),
    ],
)
def test_bad_values_fail_at_start_up_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as err:
        validate_run_config(composed(*overrides))
    assert "Fix" in str(err.value) or ": set" in str(err.value)


def composed(*overrides):
    """The GOLD config as the entrypoint composes it, before any validation."""
    from hydra import compose, initialize_config_dir

    from gold_distillation.adapters.skyrl031.main import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="gold_distill", overrides=[f"trainer.policy.model.path={LLAMA}", f"trainer.ref.model.path={QWEN}", *overrides])


def test_reward_mode_allows_student_sequence_parallelism():
    # SkyRL's own policy step gathers the student's log-probs across sequence-parallel ranks.
    validate_run_config(composed("trainer.policy.sequence_parallel_size=2"))


@pytest.mark.parametrize("override", ["gold.unknown_key=1", "gold.beta=high"])
def test_unknown_or_mistyped_gold_keys_fail_at_composition(override):
    with pytest.raises(ConfigCompositionException, match="gold"):
        gold_cfg(LLAMA, QWEN, override)


def test_missing_teacher_folder_fails_with_the_path():
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer("./no/such/teacher")


def test_loss_mode_rejects_a_policy_worker_that_is_not_gold(tokenizers):
    trainer = plain_trainer(gold_cfg(LLAMA, QWEN, "gold.mode=loss"))
    with pytest.raises(ValueError, match="gold.mode=loss"):
        trainer.build_models(object, None, None)


def test_experiment_builds_the_gold_trainer_with_remote_code_off(monkeypatch):
    from transformers import AutoTokenizer

    from gold_distillation.main_gold_distill import GOLDDistillationExp, GOLDDistillationTrainer

    from .skyrl_standins import DummyDataset, stand_in_generator

    calls = []
    real = AutoTokenizer.from_pretrained
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda path, **kw: calls.append(kw) or real(path, **kw))
    load_tokenizer.cache_clear()
    exp = GOLDDistillationExp.__new__(GOLDDistillationExp)  # __init__ would load the datasets
    exp.cfg = gold_cfg(LLAMA, QWEN)
    tokenizer = exp.get_tokenizer()
    trainer = exp.get_trainer(cfg=exp.cfg, tracker=None, tokenizer=tokenizer, train_dataset=DummyDataset(), eval_dataset=None,
                              inference_engine_client=None, generator=stand_in_generator(), colocate_pg=None)
    assert isinstance(trainer, GOLDDistillationTrainer)
    assert trainer.teacher_tokenizer.name_or_path == QWEN and not trainer.same_vocabulary
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert len(calls) == 2 and all(kw["trust_remote_code"] is False for kw in calls)
