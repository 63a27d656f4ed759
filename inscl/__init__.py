"""Notebook-driven reproducibility kit for InsCL (continual instruction tuning) and in-context-learning distillation

Modules:

- `inscl.distill`: A teacher reads k demonstrations, a student reads the query alone and learns the teacher's answer-word distribution; ICL, zero-shot, PBFT and distillation compared in-domain and out-of-domain, with bias-independent measures and peak memory.
- `inscl.icl`: Prompt patterns (Mosbach et al.'s, an instruction and a chat-template pattern), class-balanced demonstrations, answer-word probabilities with the demonstration prefix encoded once and its KV cache reused for every query, and contextual or prior-matching calibration."""

__version__ = "0.1.0"
