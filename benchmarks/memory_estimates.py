"""Memory per GPU for unlearning 7B and 70B models: model states only, offline, from configs (no Hub, no GPU).

The models are built on the meta device (``accelerate.init_empty_weights``) from Llama-2-7B / Llama-2-70B shapes
written below (the published config values), and sized with accelerate's own estimator functions:
``calculate_maximum_sizes`` (parameter bytes, largest layer) and ``estimate_training_usage`` (what
``accelerate estimate-memory`` reports for one unsharded process, bf16 mixed precision with Adam). Per GPU under
ZeRO-3 / FSDP full sharding the script uses the standard mixed-precision Adam count of the ZeRO paper
(Rajbhandari et al. 2020): 2 bytes bf16 weights + 2 bytes bf16 gradients + 12 bytes fp32 master weights and two
Adam moments = 16 bytes per trainable parameter, divided over the GPUs. LoRA counts exactly from the layer shapes.

Covered: weights, gradients, optimizer states, a frozen reference copy. NOT covered: activations (batch x sequence
dependent; use gradient checkpointing via ``training_args={"gradient_checkpointing": True}``), the CUDA context and
allocator fragmentation (add ~1-3 GB per GPU), temporary all-gather buffers of FSDP/ZeRO-3 (about one layer).

Usage::

    python benchmarks/memory_estimates.py            # the markdown table used in docs/methods/*.md "Scaling"
    python benchmarks/memory_estimates.py --json     # the raw numbers
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: Llama-2 shapes (from the published config.json files of meta-llama/Llama-2-7b-hf and Llama-2-70b-hf).
MODELS: dict[str, dict[str, Any]] = {
    "7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096),
    "70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=32000, max_position_embeddings=4096),
}  # fmt: skip
LORA_R = 16
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPUS = (1, 8)
GB = 1e9


def meta_model(name: str) -> Any:
    """The model ``name`` (a key of MODELS) with no weights allocated (meta device)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, LlamaConfig

    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(LlamaConfig(**MODELS[name]))


def lora_params(model: Any, r: int = LORA_R, targets: tuple[str, ...] = LORA_TARGETS) -> int:
    """Parameters of a LoRA adapter of rank ``r`` on every Linear whose name ends in one of ``targets``."""
    import torch

    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            n += r * (mod.in_features + mod.out_features)
    return n


def estimate(name: str) -> dict[str, Any]:
    """Model-state memory of ``name`` for the unlearning set-ups of the docs, per GPU for 1 and 8 GPUs (bytes)."""
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes

    model = meta_model(name)
    fp32_bytes, largest = calculate_maximum_sizes(model)
    params = fp32_bytes // 4
    lora = lora_params(model)
    acc = estimate_training_usage(fp32_bytes, "bfloat16")
    out: dict[str, Any] = {
        "params": params,
        "lora_params": lora,
        "largest_layer_bf16": largest[0] / 2,
        "accelerate_estimate_1proc_bf16_adam": {k: v for k, v in acc.items()},
        "per_gpu": {},
    }
    for n in GPUS:
        out["per_gpu"][n] = {
            # full-weight unlearning (no LoRA), ZeRO-3 / FSDP full shard, mixed-precision Adam
            "full": 16 * params / n,
            # + the frozen reference ("copy" mode: NPO, IdkDPO, UNDIAL, RMU, KL retain terms): an unsharded bf16 copy
            "full_with_reference_copy": 16 * params / n + 2 * params,
            # LoRA: frozen bf16 base sharded, adapter trained with Adam; reference = adapter disabled (no copy)
            "lora": 2 * params / n + 16 * lora / n,
            # inference / evaluation: bf16 weights split by device_map="auto"
            "eval_device_map": 2 * params / n,
        }
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the per-GPU estimates (GB = 1e9 bytes)."""
    rows = [
        "| model | params | LoRA r16 params | full-weight, ZeRO-3/FSDP | + frozen reference copy | LoRA + FSDP/ZeRO-3 "
        "| eval, device_map | accelerate estimate-memory, 1 process (bf16 Adam peak) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        g = r["per_gpu"]

        def cell(key: str, g: dict = g) -> str:
            return " / ".join(f"{g[n][key] / GB:.1f}" for n in GPUS)

        acc_peak = max(r["accelerate_estimate_1proc_bf16_adam"].values()) / GB
        rows.append(
            f"| {name} | {r['params'] / 1e9:.2f}B | {r['lora_params'] / 1e6:.1f}M | {cell('full')} "
            f"| {cell('full_with_reference_copy')} | {cell('lora')} | {cell('eval_device_map')} | {acc_peak:.1f} |"
        )
    gpus = " / ".join(str(n) for n in GPUS)
    return (
        "\n".join(rows)
        + f"\n\nGB per GPU for {gpus} GPUs; model states only (weights, gradients, Adam states), no activations.\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="Print the raw numbers as JSON.")
    args = p.parse_args(argv)
    results = {name: estimate(name) for name in MODELS}
    if args.json:
        print(json.dumps(results, indent=2, default=float))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
