"""Notebook-driven reproducibility kit for InsCL (continual instruction tuning) and in-context-learning distillation

Modules:

- `inscl.icl`: Prompt patterns, class-balanced demonstrations, and answer-word probabilities with the demonstration prefix encoded once and its KV cache reused for every query."""

__version__ = "0.1.0"
