"""llm-unlearn: make a fine-tuned language model forget chosen data, and prove it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
