"""What the trainer and workers load from the config: the hybrid loss's vocabulary tables."""

from gold_distillation.config import GOLDConfig
from gold_distillation.gold_setup import hybrid_tables


def test_hybrid_tables_match_the_end_tokens_of_the_two_views(tokenizers):
    # Phi-3's template ends a turn with <|end|>, not its EOS <|endoftext|>; Llama 3.1's with <|eot_id|>.
    llama, phi3 = tokenizers["llama3.1-instruct"], tokenizers["phi3-mini"]
    for student, teacher, student_end, teacher_end in [
        (llama, phi3, "<|eot_id|>", "<|end|>"),
        (phi3, llama, "<|end|>", "<|eot_id|>"),
    ]:
        tables = hybrid_tables(student, teacher, GOLDConfig())
        t2s = tables.teacher_to_student
        assert t2s[teacher.convert_tokens_to_ids(teacher_end)] == student.convert_tokens_to_ids(student_end)
        assert t2s[teacher.eos_token_id] == -1 or teacher.eos_token_id == teacher.convert_tokens_to_ids(teacher_end)
        assert tables.student_matched[student.convert_tokens_to_ids(student_end)]


def test_hybrid_tables_follow_the_end_token_settings(tokenizers):
    llama, qwen = tokenizers["llama3.1-instruct"], tokenizers["qwen2.5-instruct"]
    end_of_text = llama.convert_tokens_to_ids("<|end_of_text|>")
    gold = GOLDConfig(student_eos_token_ids=[end_of_text], teacher_end_token="<|endoftext|>")
    t2s = hybrid_tables(llama, qwen, gold).teacher_to_student
    assert t2s[qwen.convert_tokens_to_ids("<|endoftext|>")] == end_of_text
    assert t2s[qwen.convert_tokens_to_ids("<|im_end|>")] == -1
