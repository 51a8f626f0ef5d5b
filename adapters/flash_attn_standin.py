"""A pure-torch stand-in for the two `flash_attn.bert_padding` helpers SkyRL's model wrapper imports
at module level (skyrl-train 0.3.1 and skyrl 0.4.0 alike). Installed only where flash_attn is not
(CPU tests and the CPU demo); on GPU machines the real package is used and nothing is replaced.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import torch


def _unpad_input(hidden_states, attention_mask, unused_mask=None):
    """flash_attn.bert_padding.unpad_input (flash-attn >= 2.7 return signature)."""
    seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return flat[indices], indices, cu_seqlens, int(seqlens.max()), seqlens


def _pad_input(hidden_states, indices, batch, seqlen):
    """flash_attn.bert_padding.pad_input."""
    out = hidden_states.new_zeros(batch * seqlen, *hidden_states.shape[1:])
    out[indices] = hidden_states
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])


def ensure_flash_attn() -> None:
    """Install the stand-in as `flash_attn` unless a flash_attn package is importable (idempotent)."""
    if "flash_attn" in sys.modules or importlib.util.find_spec("flash_attn") is not None:
        return
    package = types.ModuleType("flash_attn")
    # transformers inspects __spec__ of installed packages; a module without one makes it raise.
    package.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None, is_package=True)
    package.__path__ = []
    package.__version__ = "0.0.0+gold-cpu-stand-in"
    padding = types.ModuleType("flash_attn.bert_padding")
    padding.__spec__ = importlib.machinery.ModuleSpec("flash_attn.bert_padding", None)
    padding.pad_input, padding.unpad_input = _pad_input, _unpad_input
    package.bert_padding = padding
    sys.modules["flash_attn"] = package
    sys.modules["flash_attn.bert_padding"] = padding
