"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random Llama built from a config (no hub)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_UNLEARN_CACHE", str(REPO / ".cache" / "llm_unlearn"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and two threads per process collapse under a loaded CPU.
torch.set_num_threads(1)
TOFU_DIR = REPO.parent / "shared" / "data" / "tofu"
TOFU_LOGS_DIR = REPO.parent / "shared" / "data" / "tofu_eval_logs"


def build_tiny_llama(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A 2-layer Llama with hidden size 32 and the SmolLM2 vocabulary, random weights, float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(torch.float32)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2 converted to safetensors (cached across sessions under .cache/)."""
    from llm_unlearn.models import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from llm_unlearn.models import load_tokenizer

    return load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny random Llama + tokenizer folder, loadable with ModelConfig(name_or_path=...)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_llama(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model(tiny_model_dir):
    """A fresh float32 copy of the tiny model for each test."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
