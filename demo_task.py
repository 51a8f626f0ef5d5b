"""The CPU demo's world: a synthetic addition task, two built-in tokenizers of different kinds and
tiny models of two architectures. Nothing is downloaded; everything is deterministic.

- Task: the user message "a+b=" (a, b in 0..OPERAND_MAX) and the answer str(a + b).
- Teacher tokenizer: byte-level BPE (the Qwen2 kind: digits split one by one, ChatML template,
  EOS <|im_end|>). Student tokenizer: SentencePiece-style BPE with byte fallback (the Llama 2
  kind: "▁" word prefixes, split digits, <0xNN> byte tokens, [INST] template, EOS </s>). No token
  id means the same thing on both sides; the student's answers start with a "▁" token that is
  zero-width in the decoded text, so answer groups hold two student tokens and one teacher token.
- Models: a Qwen2 teacher and a Llama student (2 layers, hidden 64 by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

OPERAND_MAX = 9

# Prose for the tokenizers' vocabularies beside the task lines (fixed: tokenizers must not vary).
_PROSE = (
    "The teacher knows how to add two numbers. The student learns from the teacher. "
    "What is the sum? Add the numbers and write the answer. Seven plus eight is fifteen. "
    "Numbers like 12, 345 and 6789 are written with digits; the answer is a number."
)

TEACHER_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STUDENT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class Problem:
    question: str
    answer: str

    @property
    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.question}]


def all_problems() -> list[Problem]:
    """Every problem of the task, in a fixed order."""
    return [
        Problem(f"{a}+{b}=", str(a + b)) for a in range(OPERAND_MAX + 1) for b in range(OPERAND_MAX + 1)
    ]


def tokenizer_corpus() -> list[str]:
    """The built-in text both demo tokenizers are trained on."""
    lines = [f"{p.question}{p.answer}" for p in all_problems()]
    lines += [f"The answer to {p.question} is {p.answer}." for p in all_problems()[::7]]
    return lines + _PROSE.split(". ")


def _wrap(backend, chat_template: str, **special) -> "PreTrainedTokenizerFast":
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    tok.chat_template = chat_template
    return tok


def byte_level_tokenizer(vocab_size: int = 400):
    """Byte-level BPE (the Qwen / GPT-2 kind) with a ChatML template; EOS <|im_end|>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    # Digits are split one by one before the byte-level regex, as in Qwen2's tokenizer.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer)
    return _wrap(backend, TEACHER_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def sentencepiece_tokenizer(vocab_size: int = 340):
    """SentencePiece-style BPE with byte fallback and split digits (the Llama 2 kind), [INST]
    template; BOS <s>, EOS </s>. The 256 byte tokens <0x00>..<0xFF> cover any text."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]

    def configure(backend):
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex("▁"), behavior="merged_with_next"), pre_tokenizers.Digits(individual_digits=True)]
        )
        backend.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        return backend

    trained = configure(Tokenizer(models.BPE(unk_token="<unk>")))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(byte_tokens), special_tokens=specials, show_progress=False
    )
    trained.train_from_iterator(tokenizer_corpus(), trainer)
    model = json.loads(trained.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    # Specials first, then the byte tokens, then the learned pieces in training order.
    names = specials + byte_tokens + [piece for piece, _ in learned if piece not in specials]
    vocab = {piece: i for i, piece in enumerate(names)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    backend = configure(Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)))
    backend.add_special_tokens(specials)
    return _wrap(
        backend, STUDENT_CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def load_tokenizer(path: str | Path):
    """A real tokenizer folder (e.g. ../shared/tokenizers/qwen2.5-instruct); it needs a chat
    template and an EOS token (instruct tokenizers have both)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tok, "chat_template", None) or tok.eos_token_id is None:
        raise ValueError(f"tokenizer {path!s} needs a chat template and an EOS token; use an instruct tokenizer folder")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_model(family: str, vocab_size: int, hidden: int, layers: int, seed: int):
    """A small random causal LM: family "qwen2" or "llama"."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
    )
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    raise ValueError(f"unknown model family {family!r}; expected 'qwen2' or 'llama'")


def prompt_ids(tokenizer, problems: list[Problem]) -> list[list[int]]:
    """Chat-template token ids (with the generation prompt) of each problem."""
    return [
        list(tokenizer.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=True, return_dict=False))
        for p in problems
    ]


def answer_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a completion as the model writes it after its generation prompt, plus EOS."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
