"""UnlearnTrainer: forwards, reference model handling, loss scaling and metric logging. Losses live elsewhere.

One trainer for every method: it looks the method up in the registry (`llm_unlearn.methods`), computes exactly
the forward results the method's terms need (`Method.needs`), calls the terms, and logs each one separately.

Gradient accumulation and several processes: every term is a mean over the sequences or answer tokens of its
sub-batch. `get_batch_samples` counts those over the whole optimizer step (all micro-batches, all ranks) and
`compute_loss` rescales each micro-batch mean by `local_count * world_size / step_count`, so that after the
Trainer sums micro-batches and DDP/DeepSpeed average ranks, the gradient is the one of the full-batch mean, even
for token means over answers of different lengths and for a short last micro-batch. Hence
`loss_is_scaled_for_ga = True` (the Trainer must not divide again).
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from llm_unlearn.data.collate import IGNORE_INDEX, ForgetRetainDataset, UnlearnCollator
from llm_unlearn.errors import ConfigError, TrainingDivergedError
from llm_unlearn.losses import nll_from_log_probs, sequence_log_probs
from llm_unlearn.methods import ForwardOutputs, Hyperparams, Method, SideOutputs, get_method, resolve_hyperparams

__all__ = ["UnlearnTrainer", "count_units", "is_peft_model"]

SIDES = ("forget", "forget_idk", "retain")


def is_peft_model(model: Any) -> bool:
    """True for a peft model (whose reference is the same model with its adapters disabled)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def count_units(batch: dict[str, torch.Tensor], unit: str) -> int:
    """Number of sequences, or of predicted answer tokens (`labels[:, 1:] != -100`), in one sub-batch."""
    if unit == "sequences":
        return int(batch["input_ids"].shape[0])
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


class _SetEpochCallback(TrainerCallback):
    """Redraws the forget/retain pairing each epoch (accelerate does not always forward `set_epoch`)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(round(state.epoch or 0)))


class UnlearnTrainer(Trainer):
    """`transformers.Trainer` that optimizes `forget_weight * forget_term + retain_weight * retain_term`.

    Batches come from `ForgetRetainDataset` + `UnlearnCollator` (`{"index", "forget", "retain", "forget_idk"}`).

    Args:
        model: the model to unlearn; a peft model (LoRA) or a plain causal LM (full fine-tuning).
        args: `TrainingArguments`; `remove_unused_columns` is forced to False.
        train_dataset: a `ForgetRetainDataset`.
        method: a registered method name or a `Method`.
        hyperparams: resolved hyperparameters; None uses the method's defaults.
        ref_model: the reference for full fine-tuning when one is needed each step. None: for a peft model the
            reference is the model with adapters disabled (no copy); otherwise a frozen deep copy is made only
            when needed (KL, or `precompute_reference=False`). Under DeepSpeed ZeRO-3 pass one loaded with
            `from_pretrained` instead (a deep copy of sharded weights is not a model).
        precompute_reference: compute reference log-probs of the forget (and refusal) answers once, before the
            first step, and read them by example index; no reference forward on the forget set per step.
        forget_nll_ceiling: stop with `TrainingDivergedError` when the forget NLL per token exceeds this.
        **kwargs: passed to `Trainer` (data_collator, processing_class, callbacks, eval_dataset, ...).
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: Any,
        args: Any,
        train_dataset: ForgetRetainDataset,
        method: str | Method = "npo_rt",
        hyperparams: Hyperparams | None = None,
        ref_model: Any = None,
        precompute_reference: bool = True,
        forget_nll_ceiling: float | None = 50.0,
        **kwargs: Any,
    ):
        self.method = get_method(method) if isinstance(method, str) else method
        self.hyperparams = hyperparams or resolve_hyperparams(self.method)
        self.forget_nll_ceiling = forget_nll_ceiling
        self._check_data(train_dataset)
        args.remove_unused_columns = False
        if kwargs.get("data_collator") is None:
            pad = getattr(kwargs.get("processing_class"), "pad_token_id", None)
            kwargs["data_collator"] = UnlearnCollator(pad if pad is not None else 0)
        self.use_adapter_reference = is_peft_model(model)
        self.precompute_sides = [
            s for s in ("forget", "forget_idk") if precompute_reference and f"{s}.ref_logp" in self.method.needs
        ]
        online = self.method.needs_reference_logits or (self.method.needs_reference and not precompute_reference)
        if ref_model is None and online and not self.use_adapter_reference:
            ref_model = self._frozen_copy(model)
        self.ref_model = ref_model
        self.reference_cache: dict[str, torch.Tensor] = {}
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        callbacks = list(kwargs.pop("callbacks", None) or []) + [_SetEpochCallback(train_dataset)]
        super().__init__(model=model, args=args, train_dataset=train_dataset, callbacks=callbacks, **kwargs)
        if self.ref_model is not None:
            if self.is_deepspeed_enabled:
                from trl.models.utils import prepare_deepspeed

                self.ref_model = prepare_deepspeed(self.ref_model, self.accelerator)
            else:
                self.ref_model = self.accelerator.prepare_model(self.ref_model, evaluation_mode=True)

    # ---- setup helpers ----------------------------------------------------------------------

    def _check_data(self, dataset: Any) -> None:
        if self.method.needs_retain and getattr(dataset, "retain", None) is None:
            raise ConfigError(f"method {self.method.name!r} needs a retain set (data.retain), and none was given")
        if self.method.needs_idk and getattr(dataset, "forget_idk", None) is None:
            raise ConfigError(
                f"method {self.method.name!r} trains on refusal answers: build ForgetRetainDataset with forget_idk"
            )

    @staticmethod
    def _frozen_copy(model: Any) -> Any:
        try:
            from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

            zero3 = is_deepspeed_zero3_enabled()
        except ImportError:  # pragma: no cover
            zero3 = False
        if zero3:
            raise ConfigError(
                "full fine-tuning under DeepSpeed ZeRO-3 needs ref_model loaded with from_pretrained "
                "(a deep copy of sharded weights is not a model)"
            )
        ref = copy.deepcopy(model)
        ref.eval()
        ref.requires_grad_(False)
        return ref

    # ---- reference ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reference_mode(self, model: Any) -> Iterator[Any]:
        """Yield the module that computes reference outputs, in eval mode, under no_grad."""
        if self.ref_model is not None:
            with torch.no_grad():
                yield self.ref_model
            return
        module = self.accelerator.unwrap_model(model)
        was_training = module.training
        module.eval()
        adapter_off = module.disable_adapter() if self.use_adapter_reference else contextlib.nullcontext()
        try:
            with torch.no_grad(), adapter_off:
                yield module
        finally:
            module.train(was_training)

    def reference_logits(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Reference logits `[B, T, V]` (no grad) for one sub-batch."""
        with self._reference_mode(model) as ref:
            return ref(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits

    def precompute_reference_log_probs(self, model: Any | None = None) -> dict[str, torch.Tensor]:
        """Reference summed log-probs `[N]` of every forget (and refusal) answer, by example index.

        Runs once, in batches with a progress bar, on every process (each computes the full, small forget set,
        which keeps ZeRO-3 ranks in step). Before the first optimizer step the model itself is the reference
        when it has no adapter and no `ref_model`.
        """
        model = model if model is not None else self.model
        dataset = self.train_dataset
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.args.per_device_train_batch_size, shuffle=False, collate_fn=self.data_collator
        )
        cache = {side: torch.full((len(dataset),), float("nan")) for side in self.precompute_sides}
        bar = tqdm(loader, desc="Reference log-probs", disable=not self.is_local_process_zero())
        for batch in bar:
            for side in self.precompute_sides:
                sub = {k: v.to(self.args.device) for k, v in batch[side].items()}
                logp, _ = sequence_log_probs(self.reference_logits(model, sub), sub["labels"])
                cache[side][batch["index"]] = logp.float().cpu()
        self.reference_cache = cache
        return cache

    # ---- forwards -----------------------------------------------------------------------------

    def _side(self, model: Any, batch: dict[str, torch.Tensor], grad: bool, keep_logits: bool) -> SideOutputs:
        with contextlib.nullcontext() if grad else torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits
            logp, num_tokens = sequence_log_probs(logits, batch["labels"])
        return SideOutputs(batch["labels"], logp, num_tokens, logits if keep_logits else None)

    def _ref_logp(self, model: Any, inputs: dict[str, Any], side: str) -> torch.Tensor:
        if side in self.reference_cache:
            return self.reference_cache[side][inputs["index"].cpu()].to(inputs[side]["input_ids"].device)
        logp, _ = sequence_log_probs(self.reference_logits(model, inputs[side]), inputs[side]["labels"])
        return logp

    def forward_outputs(self, model: Any, inputs: dict[str, Any]) -> ForwardOutputs:
        """Run the forwards the method needs and attach reference values."""
        needs = self.method.needs
        out = ForwardOutputs(forget=self._side(model, inputs["forget"], "forget" in needs, False))
        if "forget_idk" in needs:
            out.forget_idk = self._side(model, inputs["forget_idk"], True, False)
        if "retain" in needs:
            out.retain = self._side(model, inputs["retain"], True, "retain.ref_logits" in needs)
            if "retain.ref_logits" in needs:
                out.retain.ref_logits = self.reference_logits(model, inputs["retain"])
        if "forget.ref_logp" in needs:
            out.forget.ref_logp = self._ref_logp(model, inputs, "forget")
        if "forget_idk.ref_logp" in needs:
            out.forget_idk.ref_logp = self._ref_logp(model, inputs, "forget_idk")
        return out

    # ---- loss ---------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator: Iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """Trainer hook: also count sequences and answer tokens per sub-batch over the optimizer step."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        keys = [(s, u) for s in SIDES for u in ("sequences", "tokens") if batch_samples and s in batch_samples[0]]
        if keys:
            counts = torch.tensor(
                [sum(count_units(b[side], unit) for b in batch_samples) for side, unit in keys],
                dtype=torch.float64,
                device=device,
            )
            if self.accelerator.num_processes > 1:
                counts = self.accelerator.reduce(counts, reduction="sum")
            normalizers = {key: float(c) for key, c in zip(keys, counts.tolist(), strict=True)}
            for batch in batch_samples:
                batch["normalizers"] = normalizers
        return batch_samples, num_items

    def _scale(self, inputs: dict[str, Any], side: str, unit: str) -> float:
        """Factor turning this micro-batch's mean into its share of the optimizer step's mean (1 outside training)."""
        normalizers = inputs.get("normalizers")
        if normalizers is None or not self.model.training:
            return 1.0
        total = normalizers[(side, unit)]
        return count_units(inputs[side], unit) * self.accelerator.num_processes / total if total else 0.0

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor | tuple[torch.Tensor, ForwardOutputs]:
        """`forget_weight * forget_term + retain_weight * retain_term`, with metrics stored for `log()`."""
        if self.precompute_sides and not self.reference_cache:
            self.precompute_reference_log_probs(model)
        out = self.forward_outputs(model, inputs)
        hp, method = self.hyperparams, self.method
        forget_term = method.forget_term(out, hp)
        term = method.forget_term
        loss = hp.forget_weight * forget_term * self._scale(inputs, term.side, term.unit)
        metrics = {"loss": hp.forget_weight * forget_term.detach(), "forget/loss": forget_term.detach()}
        if method.retain_term is not None:
            retain_term = method.retain_term(out, hp)
            term = method.retain_term
            loss = loss + hp.retain_weight * retain_term * self._scale(inputs, term.side, term.unit)
            metrics["loss"] = metrics["loss"] + hp.retain_weight * retain_term.detach()
            metrics["retain/loss"] = retain_term.detach()
            if "retain.ref_logits" in method.needs:
                metrics["retain/kl"] = retain_term.detach()
        metrics.update(self._side_metrics(out))
        self._store_metrics(metrics)
        return (loss, out) if return_outputs else loss

    @staticmethod
    def _side_metrics(out: ForwardOutputs) -> dict[str, torch.Tensor]:
        metrics = {"forget/nll": nll_from_log_probs(out.forget.logp, out.forget.num_tokens).detach()}
        if out.retain is not None:
            metrics["retain/nll"] = nll_from_log_probs(out.retain.logp, out.retain.num_tokens).detach()
        if out.forget_idk is not None:
            metrics["forget_idk/nll"] = nll_from_log_probs(out.forget_idk.logp, out.forget_idk.num_tokens).detach()
        if out.forget.ref_logp is not None:
            metrics["ref/logratio"] = (out.forget.logp - out.forget.ref_logp).mean().detach()
        return metrics

    # ---- metrics and guards -------------------------------------------------------------------

    def _store_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        """Gather this micro-batch's metrics across ranks, check the guards, buffer them for `log()`."""
        mode = "train" if self.model.training else "eval"
        keys = list(metrics)
        values = torch.stack([metrics[k].float() for k in keys])  # [K]
        gathered = self.accelerator.gather(values.unsqueeze(0))  # [W, K]
        if mode == "train":
            self._check_divergence(dict(zip(keys, gathered.unbind(-1), strict=True)))
        for key, column in zip(keys, gathered.mean(0).tolist(), strict=True):
            self._metrics[mode][key].append(column)

    def _check_divergence(self, gathered: dict[str, torch.Tensor]) -> None:
        step = self.state.global_step + 1
        for key, values in gathered.items():
            if not torch.isfinite(values).all():
                bad = values[~torch.isfinite(values)][0].item()
                raise TrainingDivergedError(
                    f"step {step}: {key} is {bad} (not finite); stopping before the optimizer step, nothing saved. "
                    "Lower training.learning_rate or the forget weight, or use a bounded method (npo, simnpo)."
                )
        ceiling = self.forget_nll_ceiling
        nll = gathered["forget/nll"].max().item()
        if ceiling is not None and nll > ceiling:
            raise TrainingDivergedError(
                f"step {step}: forget NLL per token {nll:.4g} exceeds method.forget_nll_ceiling={ceiling:g}; "
                "the forget loss is running away (gradient ascent is unbounded). Lower training.learning_rate, "
                "train fewer steps, raise the ceiling, or use a bounded method (npo, simnpo)."
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the buffered per-term metrics (averaged since the last log) to the Trainer's logs."""
        mode = "train" if self.model.training else "eval"
        buffered = {key: sum(v) / len(v) for key, v in self._metrics[mode].items() if v}
        buffered.pop("loss", None)  # the Trainer logs its own (identical) loss
        if mode == "eval":
            buffered = {f"eval_{key}": v for key, v in buffered.items()}
        logs.update(buffered)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def prediction_step(
        self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor, None, None]:
        """Evaluation: the unlearning loss of a `ForgetRetainDataset` batch (no logits returned)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Refuse to save weights containing NaN/inf (checkpoints included)."""
        for name, param in self.accelerator.unwrap_model(self.model).named_parameters():
            if param.requires_grad and param.numel() and not torch.isfinite(param.detach()).all():
                raise TrainingDivergedError(
                    f"step {self.state.global_step}: parameter {name} is not finite; not saved"
                )
        super().save_model(output_dir, _internal_call)
