"""peft LoRA helpers: sensible target modules per architecture."""

from __future__ import annotations

from typing import Any

from torch import nn


def is_gpt2_style(model: nn.Module) -> bool:
    """True for models whose linear layers are transformers ``Conv1D`` (GPT-2 family: fan_in_fan_out)."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for m in model.modules())


def default_target_modules(model: nn.Module) -> list[str]:
    """LoRA target module names present in ``model``: every linear layer inside its transformer blocks
    (attention and MLP projections, whatever the family calls them), in the order of the first block.

    Llama-style models give ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``; GPT-2 gives
    ``c_attn, c_proj, c_fc``; GPT-NeoX / Falcon / Bloom ``query_key_value, dense, dense_h_to_4h, dense_4h_to_h``;
    Phi-3 ``qkv_proj, o_proj, gate_up_proj, down_proj``. The embeddings and the LM head are never targets.

    Raises:
        ValueError: naming the model class when it has no recognised blocks or no linear layer in them.

    Example:
        >>> from hf_unlearn.models import tiny_causal_lm
        >>> m, _ = tiny_causal_lm("gpt2", texts=["a b c"] * 4, num_layers=1, hidden_size=16, vocab_size=280)
        >>> default_target_modules(m)
        ['c_attn', 'c_proj', 'c_fc']
    """
    from transformers.pytorch_utils import Conv1D

    from hf_unlearn.models import decoder_layers

    try:
        blocks = decoder_layers(model)
    except TypeError as err:
        raise ValueError(f"cannot pick LoRA target modules: {err}; pass target_modules explicitly") from err
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: list[str] = []
    wrapped: list[str] = []  # modules already wrapped by an adapter: a target themselves, their insides never
    for name, module in blocks[0].named_modules():
        if not name or any(name.startswith(w + ".") for w in wrapped):
            continue
        if isinstance(module, BaseTunerLayer):
            wrapped.append(name)
        elif not isinstance(module, (nn.Linear, Conv1D)):
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in found and not leaf.isdigit():
            found.append(leaf)
    if not found:
        raise ValueError(f"no linear layers in the blocks of {type(model).__name__}; pass target_modules explicitly")
    return found


def make_lora_config(model: nn.Module, lora: Any = True, **overrides: Any):
    """A ``peft.LoraConfig`` for ``model``.

    Args:
        model: the model the adapter will be attached to.
        lora: ``True`` (defaults), a dict of LoraConfig kwargs, or a LoraConfig (returned as is).
        **overrides: extra LoraConfig kwargs (e.g. ``layers_to_transform``).
    """
    from peft import LoraConfig

    if isinstance(lora, LoraConfig):
        return lora
    kwargs: dict[str, Any] = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "task_type": "CAUSAL_LM"}
    if isinstance(lora, dict):
        kwargs.update(lora)
    elif lora is not True:
        raise ValueError(f"lora must be True, a dict of LoraConfig options or a LoraConfig, got {lora!r}")
    kwargs.update(overrides)
    kwargs.setdefault("target_modules", default_target_modules(model))
    if is_gpt2_style(model):
        kwargs.setdefault("fan_in_fan_out", True)
    return LoraConfig(**kwargs)


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)
