"""Shared fixtures: the real tokenizers (loaded once per session) and tiny random models.

Real tokenizers are found through one setting, GOLD_TOKENIZERS_DIR (default ../shared/tokenizers
next to the project); tests that need a missing one skip and say which folder they looked for.
"""

import os
from pathlib import Path

import pytest
import torch

TOKENIZERS_DIR = Path(os.environ.get("GOLD_TOKENIZERS_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "tokenizers"))
TOKENIZER_NAMES = ("qwen2.5-instruct", "llama3.1-instruct", "llama2", "mistral-7b-v0.1", "phi3-mini", "gpt2")


class TokenizerStore:
    """Loads each real tokenizer on first use and keeps it for the session."""

    def __init__(self, root: Path):
        self.root = root
        self._loaded = {}

    def __getitem__(self, name):
        if name not in self._loaded:
            path = self.root / name
            if not (path / "tokenizer.json").exists():
                pytest.skip(f"real tokenizer {name!r} not found at {path} (set GOLD_TOKENIZERS_DIR)")
            from transformers import AutoTokenizer

            self._loaded[name] = AutoTokenizer.from_pretrained(str(path))
        return self._loaded[name]


def decode_without_specials(tokenizer, ids) -> str:
    """HF's decoded text of `ids` with the tokens the tokenizer declares special left out, which is
    what GOLD's token bytes do (alignment.token_bytes). The special tokens are removed before
    decoding rather than with skip_special_tokens=True: tokenizers 0.23 (with transformers 5) no
    longer skips special tokens declared `normalized: true` (Llama 2's <s> and </s>), while 0.22
    did; removing them by their declaration gives the same text under both."""
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    kept = [i for i in ids if i not in special]
    return tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.fixture(scope="session")
def tokenizers():
    return TokenizerStore(TOKENIZERS_DIR)


def tiny_model(family: str, vocab_size: int, seed: int = 0):
    """A 1-layer random causal LM of the given family ("qwen2" or "llama") and vocabulary size."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
    )
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    # Random init is near-uniform over a huge vocabulary; larger output weights give peaked,
    # model-like distributions so the tests see varied probabilities.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_qwen(tokenizers):
    return tiny_model("qwen2", len(tokenizers["qwen2.5-instruct"]), seed=1)


@pytest.fixture(scope="session")
def tiny_llama(tokenizers):
    return tiny_model("llama", len(tokenizers["llama3.1-instruct"]), seed=2)
