"""Benchmark one optimizer step of every unlearning preset against a plain SFT step, and the reference strategies.

Run:
    python scripts/benchmark_step.py                    # SmolLM2-135M + LoRA, fp32, 3 warmup + 7 timed steps
    python scripts/benchmark_step.py --autocast-bf16    # the same under torch.autocast(bfloat16)
    python scripts/benchmark_step.py --model PATH --configs sft grad_ascent npo --steps 3

Every configuration runs in its own subprocess on the same model and the same batch (4 forget examples of
`synth:forget`, paired with 4 `synth:retain` examples and 4 refusals), so peaks do not leak between them.
A step is `loss = compute_loss(batch); loss.backward(); AdamW.step(); zero_grad()` (SFT: the model's own
causal-LM loss on the forget batch). Reported per configuration:
- median / min step time over the timed steps (wall clock, `time.perf_counter`, CUDA synchronized on GPU);
- peak memory during the timed steps. CPU: the process's peak resident set size (`VmHWM` of
  /proc/self/status, reset through /proc/self/clear_refs after warm-up), with `MALLOC_MMAP_THRESHOLD_=65536`
  so freed tensors go back to the OS and RSS follows live memory; `step_mb` is that peak minus the RSS
  before the timed steps (what a step adds on top of weights and optimizer state). GPU:
  `torch.cuda.max_memory_allocated` and its increase over the allocation before the timed steps.
Writes `benchmarks/step.json`, `benchmarks/step.md` (a Markdown table, also printed) and `benchmarks/step.png`
(step time and peak memory relative to gradient ascent). `--from-json benchmarks/step.json` redraws the table
and the figure without measuring again.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[1]

# name -> (method or "sft", lora, precompute_reference, reference: "adapter" | "copy" | None)
CONFIGS: dict[str, tuple[str, bool, bool, str | None]] = {
    "sft": ("sft", True, True, None),
    "grad_ascent": ("grad_ascent", True, True, None),
    "grad_diff": ("grad_diff", True, True, None),
    "grad_ascent_kl": ("grad_ascent_kl", True, True, "adapter"),
    "npo": ("npo", True, True, None),
    "npo_rt": ("npo_rt", True, True, None),
    "npo_kl": ("npo_kl", True, True, "adapter"),
    "simnpo": ("simnpo", True, True, None),
    "idk_nll": ("idk_nll", True, True, None),
    "idk_dpo": ("idk_dpo", True, True, None),
    "npo online ref: adapter off": ("npo", True, False, "adapter"),
    "npo online ref: deep copy": ("npo", True, False, "copy"),
    "sft full FT": ("sft", False, True, None),
    "npo online ref: deep copy, full FT": ("npo", False, False, "copy"),
}


def reference_label(name: str) -> str:
    """How a configuration gets its reference: precomputed, adapter off, deep copy, or none needed."""
    from llm_unlearn.methods import get_method

    method, use_lora, precompute, reference = CONFIGS[name]
    if method == "sft" or not get_method(method).needs_reference:
        return "-"
    parts = ["precomputed"] if precompute and any(n.endswith(".ref_logp") for n in get_method(method).needs) else []
    if reference:
        parts.append({"adapter": "adapter off", "copy": "deep copy"}[reference] + " each step")
    return " + ".join(parts)


def _rss_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class MemoryMeter:
    """Peak memory over a window: CUDA allocator stats on GPU, resettable peak RSS on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = _rss_kb("VmRSS") * 1024

    def stop(self) -> tuple[float, float]:
        """(peak MiB, peak minus the start MiB)."""
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _rss_kb("VmHWM") * 1024
        return peak / 2**20, (peak - self.base) / 2**20


def _batch(tokenizer: Any, lora: bool) -> tuple[Any, dict[str, Any]]:
    from llm_unlearn.config import DataConfig
    from llm_unlearn.data.collate import ForgetRetainDataset, PromptFormatter, UnlearnCollator, draw_refusals
    from llm_unlearn.data.sources import load_rows
    from llm_unlearn.data.tofu import load_refusals

    data = DataConfig()
    forget = load_rows("synth:forget", data, "forget")[:4]
    retain = load_rows("synth:retain", data, "retain")[:4]
    fmt = PromptFormatter(tokenizer, max_length=256)
    enc = fmt.encode_many
    refusals = draw_refusals(4, load_refusals(None), seed=0)
    dataset = ForgetRetainDataset(
        enc([(r["question"], r["answer"]) for r in forget]),
        enc([(r["question"], r["answer"]) for r in retain]),
        enc([(r["question"], a) for r, a in zip(forget, refusals, strict=True)]),
        seed=0,
    )
    batch = UnlearnCollator(tokenizer.pad_token_id)([dataset[i] for i in range(4)])
    return dataset, batch


def worker(name: str, model_spec: str, steps: int, warmup: int, bf16: bool) -> dict[str, Any]:
    """Measure one configuration in this process; returns a JSON-able dict."""
    from transformers import TrainingArguments

    from llm_unlearn.config import LoraConfig, ModelConfig
    from llm_unlearn.models import attach_lora, load_model, load_tokenizer
    from llm_unlearn.trainer import UnlearnTrainer

    method, use_lora, precompute, reference = CONFIGS[name]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model_spec)
    model = load_model(ModelConfig(name_or_path=model_spec, dtype="float32")).to(device)
    ref_model = None
    if reference == "copy":
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    if use_lora:
        model = attach_lora(model, LoraConfig())
    dataset, batch = _batch(tokenizer, use_lora)
    to_device = {
        k: {kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v.to(device)
        for k, v in batch.items()
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    precompute_s = 0.0
    if method == "sft":
        forget = to_device["forget"]

        def loss_fn() -> torch.Tensor:
            return model(**forget).loss

    else:
        args = TrainingArguments(
            output_dir=str(REPO / "outputs" / "benchmark_tmp"),
            per_device_train_batch_size=4,
            report_to="none",
            use_cpu=device.type == "cpu",
            disable_tqdm=True,
        )
        trainer = UnlearnTrainer(
            model,
            args,
            dataset,
            method=method,
            ref_model=ref_model,
            precompute_reference=precompute,
            forget_nll_ceiling=None,
        )
        if trainer.precompute_sides:
            start = time.perf_counter()
            with autocast:
                trainer.precompute_reference_log_probs(model)
            precompute_s = time.perf_counter() - start

        def loss_fn() -> torch.Tensor:
            return trainer.compute_loss(model, to_device)

    model.train()
    meter = MemoryMeter(device)
    times = []
    for i in range(warmup + steps):
        if i == warmup:
            meter.start()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak_mb, step_mb = meter.stop()
    return {
        "name": name,
        "method": method,
        "lora": use_lora,
        "reference": reference_label(name),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "peak_mb": peak_mb,
        "step_mb": step_mb,
        "precompute_s": precompute_s,
        "trainable_params": sum(p.numel() for p in trainable),
        "tokens": {k: int(v["attention_mask"].sum()) for k, v in batch.items() if isinstance(v, dict)},
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    by_name = {r["name"]: r for r in results}
    sft, ga = by_name.get("sft"), by_name.get("grad_ascent")
    lines = [
        f"Step benchmark: {meta['model']}, {meta['dtype']}, batch 4, {meta['device']}, "
        f"{meta['warmup']} warm-up + {meta['steps']} timed steps, {meta['date']}",
        *([f"Note: {meta['notes']}"] if meta.get("notes") else []),
        "",
        "| config | reference | median step (s) | x SFT | x GA | peak mem (MiB) | step mem (MiB) | x GA (step mem) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        x_sft = f"{r['median_s'] / sft['median_s']:.2f}" if sft else "-"
        x_ga = f"{r['median_s'] / ga['median_s']:.2f}" if ga else "-"
        x_mem = f"{r['step_mb'] / ga['step_mb']:.2f}" if ga and ga["step_mb"] > 0 else "-"
        ref = reference_label(r["name"]) if r["name"] in CONFIGS else r["reference"]
        lines.append(
            f"| {r['name']} | {ref} | {r['median_s']:.3f} | {x_sft} | {x_ga} | "
            f"{r['peak_mb']:.0f} | {r['step_mb']:.0f} | {x_mem} |"
        )
    if ga and "npo" in by_name:
        npo = by_name["npo"]
        lines += [
            "",
            f"Targets (NPO with precomputed reference vs GA): step time {npo['median_s'] / ga['median_s']:.3f}x "
            f"(target <= 1.10), peak memory {npo['peak_mb'] / ga['peak_mb']:.3f}x (target <= 1.05), "
            f"step memory {npo['step_mb'] / max(ga['step_mb'], 1e-9):.3f}x.",
        ]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], meta: dict[str, Any], path: Path) -> None:
    """Horizontal bars: median step time and peak memory of each configuration, relative to gradient ascent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ga = next((r for r in results if r["name"] == "grad_ascent"), results[0])
    names = [r["name"] for r in results][::-1]
    time_x = [r["median_s"] / ga["median_s"] for r in results][::-1]
    mem_x = [r["peak_mb"] / ga["peak_mb"] for r in results][::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.42 * len(names) + 1.6), sharey=True)
    for ax, values, title in ((axes[0], time_x, "median step time"), (axes[1], mem_x, "peak memory (RSS)")):
        ax.barh(names, values, color=["tab:red" if n == "npo" else "tab:blue" for n in names])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel(f"{title}, x {ga['name']}")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    fig.suptitle(f"{meta['model']}, {meta['dtype']}, batch 4, {meta['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(results: list[dict[str, Any]], meta: dict[str, Any], out: Path, suffix: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results, meta)
    (out / f"step{suffix}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (out / f"step{suffix}.md").write_text(table)
    plot(results, meta, out / f"step{suffix}.png")
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="Model spec (default: the built-in SmolLM2-135M).")
    parser.add_argument("--steps", type=int, default=7, help="Timed steps per configuration.")
    parser.add_argument("--warmup", type=int, default=3, help="Warm-up steps (not timed).")
    parser.add_argument("--autocast-bf16", action="store_true", help="Run steps under torch.autocast(bfloat16).")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help=f"Subset of: {', '.join(CONFIGS)}.")
    parser.add_argument("--out", default=str(REPO / "benchmarks"), help="Folder for step.json and step.md.")
    parser.add_argument("--from-json", help="Redraw step.md and step.png from this step.json; measure nothing.")
    parser.add_argument("--notes", default="", help="A remark stored in step.json and printed under the table title.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        suffix = "_bf16" if "bf16" in saved["meta"]["dtype"] else ""
        write_outputs(saved["results"], saved["meta"], Path(args.from_json).parent, suffix)
        return 0
    if args.worker:
        result = worker(args.worker, args.model, args.steps, args.warmup, args.autocast_bf16)
        print("RESULT " + json.dumps(result))
        return 0
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {list(CONFIGS)}")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1"}
    results = []
    for name in tqdm(args.configs, desc="configs"):
        cmd = [sys.executable, __file__, "--worker", name, "--model", args.model, "--steps", str(args.steps)]
        cmd += ["--warmup", str(args.warmup)] + (["--autocast-bf16"] if args.autocast_bf16 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"benchmark config {name!r} failed (exit {proc.returncode})")
        results.append(json.loads(line[len("RESULT ") :]))
    meta = {
        "model": args.model,
        "dtype": "bf16 autocast (fp32 weights)" if args.autocast_bf16 else "fp32",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "notes": args.notes,
    }
    write_outputs(results, meta, Path(args.out), "_bf16" if args.autocast_bf16 else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
