"""GOLD: cross-tokenizer on-policy distillation as a SkyRL trainer extension."""
