"""Notebook-driven reproducibility kit for InsCL (continual instruction tuning) and in-context-learning distillation"""

__version__ = "0.1.0"
