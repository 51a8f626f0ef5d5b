"""Stand-ins for trainer and worker tests on any SkyRL version (imports no SkyRL): what a plain
worker object needs in place of a distributed run, Ray as the identity, and the run modes. The
per-version pieces are in skyrl_standins.py (skyrl-train 0.3.1) and skyrl040_standins.py (skyrl
0.4.0), under the same names; skyrl_versions.py picks the installed one."""

from contextlib import contextmanager
from unittest.mock import patch

import torch

from .conftest import TOKENIZERS_DIR

# The student and teacher tokenizers of the trainer tests.
LLAMA, QWEN = str(TOKENIZERS_DIR / "llama3.1-instruct"), str(TOKENIZERS_DIR / "qwen2.5-instruct")

WORKER_KWARGS = dict(world_size=1, rank=0, local_rank=0, master_addr="localhost", master_port=12345, sequence_parallel_size=1)

# The GOLD run modes and the overrides that select them.
MODES = {"reward": [], "loss": ["gold.mode=loss"], "uld_reward": ["gold.uld_reward_coef=0.5"]}


class CPUStrategy:
    """The parts of SkyRL's FSDP strategy that a single-process CPU training step uses."""

    def backward(self, loss, model, optimizer):
        loss.backward()

    def optimizer_step(self, optimizer, model, scheduler, name=None):
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        return grad_norm

    def all_reduce(self, data, op="mean", group=None):
        return data

    def is_rank_0(self):
        return False


@contextmanager
def without_ray():
    """Trainer, dispatch and worker code with ray.get/ray.put as the identity (stand-in groups
    return values, not object refs), and SkyRL's CUDA device as the CPU."""
    with patch("ray.get", side_effect=lambda x: x), patch("ray.put", side_effect=lambda x: x), patch(
        "torch.cuda.current_device", return_value="cpu"
    ), patch("torch.distributed.barrier"):
        yield


class DummyDataset:
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return "dummy"

    def collate_fn(self, batch):
        return batch
