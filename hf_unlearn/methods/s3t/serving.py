"""S3T serving: the ensemble forward over the live shards and generation (one shard or several).

Each live shard serves its longest valid chain of stage adapters (peft sums the active ones). ``forward`` averages
the shards' logits (or log-probs); with several live shards the base blocks below every live chain run once and
each shard branches from there. ``generate`` uses the shard's own PeftModel when one shard is live, else
:class:`S3TEnsembleForCausalLM` (no KV cache).

Example:
    >>> # s3t(input_ids=ids).logits; s3t.generate(input_ids=ids, max_new_tokens=8)
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_unlearn.methods.s3t.stages import _from_block, _hidden_inputs
from hf_unlearn.models import unwrap

logger = logging.getLogger("hf_unlearn")

if TYPE_CHECKING:
    from hf_unlearn.methods.s3t.model import S3TModel


class ServingMixin:
    """The serving half of :class:`S3TModel`: activate a chain, forward, generate."""

    def _activate(self, chain: list[str], inference_mode: bool = True) -> None:
        """Make exactly ``chain`` active (peft sums them). PeftModel.set_adapter takes one name: use the LoraModel."""
        self._active_key = None
        self.peft_model.base_model.set_adapter(list(chain), inference_mode=inference_mode)
        self.peft_model.active_adapter = chain[-1]  # PeftModel's own (single) name must stay a live adapter

    def get_base_model(self) -> nn.Module:
        """The underlying transformers model (with the LoRA layers injected); lets ``check_causal_lm`` accept us."""
        return unwrap(self.peft_model)

    @property
    def device(self) -> torch.device:
        return next(self.peft_model.parameters()).device

    def shared_start(self, served: dict[int, list[str]] | None = None) -> int:
        """Lowest block index carrying an active adapter in any live chain (blocks below it are pure base).

        0 when a single shard is live (nothing to share) or some chain reaches block 0.
        """
        served = self.served() if served is None else served
        if len(served) < 2:
            return 0
        return min(
            min(b for name in chain for b in self.state["adapters"][name]["blocks"]) for chain in served.values()
        )

    def live_shards(self) -> list[int]:
        return sorted(self.served())

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        ensemble: str | None = None,
        share: bool | None = None,
        **kwargs: Any,
    ):
        """Mean over live shards of the logits (or log-probs: ``ensemble="logprobs"``); loss when ``labels``.

        With several live shards and ``share`` (default: ``S3TConfig.shared_lower_blocks``), the base blocks
        below the lowest active stage group of all live chains run once and each shard branches from there
        (bitwise equal to ``share=False``, which runs every shard's full model).

        Raises:
            RuntimeError: when every shard is dead (all sequences cut to nothing) and ``S3TConfig.when_dead`` is
                ``"raise"``: retrain first. With ``"base"`` the base model (every adapter off) serves instead.
        """
        kwargs.pop("use_cache", None)  # the ensemble forward never caches (generation re-runs the prefix)
        mode = ensemble or self.config_s3t.ensemble
        with self._lock:
            served = self.served()
            if not served:
                self._check_dead("forward")
                return self._base_forward(input_ids, attention_mask, labels, mode, **kwargs)
            if self.peft_model.training:  # serving is always in eval mode (dropout off)
                self.peft_model.eval()
            total = None
            shards = sorted(served)
            start = self.shared_start(served) if share is None or share else 0
            if share is None and not self.config_s3t.shared_lower_blocks:
                start = 0
            hidden = None
            if start > 0:  # base blocks below every live chain: run them once
                self._activate(served[shards[0]])
                inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
                hidden = _hidden_inputs(self.peft_model, [start], **inputs)[start]
            for j in shards:
                self._activate(served[j])
                ctx = _from_block(self.peft_model, start, hidden) if hidden is not None else contextlib.nullcontext()
                with ctx:
                    out = self.peft_model(
                        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs
                    )
                x = out.logits.float()
                if mode == "logprobs":
                    x = torch.log_softmax(x, dim=-1)
                total = x if total is None else total + x
            logits = total / len(served)
        loss = None
        if labels is not None:
            from hf_unlearn.training.losses import batch_nll

            loss = batch_nll(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _check_dead(self, what: str) -> None:
        """Every shard is dead: raise (``when_dead="raise"``), or log once that the base model serves."""
        if self.config_s3t.when_dead == "raise":
            raise RuntimeError(
                "every S3T shard is dead (all training sequences were cut by deletions): call retrain() "
                f"(nothing to {what} with), or set S3TConfig.when_dead='base' to serve the base model meanwhile"
            )
        if not getattr(self, "_warned_dead", False):
            self._warned_dead = True
            logger.warning("every S3T shard is dead: the base model (no adapter) serves until retrain()")

    def _base_forward(self, input_ids, attention_mask, labels, mode: str, **kwargs: Any):
        """The base model's forward (every stage adapter off), in the ensemble's output convention."""
        if self.peft_model.training:
            self.peft_model.eval()
        with self.peft_model.disable_adapter():
            out = self.peft_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        logits = out.logits.float()
        if mode == "logprobs":
            logits = torch.log_softmax(logits, dim=-1)
        loss = None
        if labels is not None:
            from hf_unlearn.training.losses import batch_nll

            loss = batch_nll(logits, labels)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def generate(self, *args: Any, **kwargs: Any):
        """``generate`` of the served model: the shard's own PeftModel when one shard is live, else the ensemble.

        With several live shards the ensemble runs without a KV cache (every step re-encodes the sequence).
        """
        with self._lock:
            served = self.served()
            if not served:
                self._check_dead("generate")
                if self.peft_model.training:
                    self.peft_model.eval()
                with self.peft_model.disable_adapter():
                    return self.peft_model.generate(*args, **kwargs)
            if len(served) == 1:
                self._activate(next(iter(served.values())))
                if self.peft_model.training:  # serving is always in eval mode (dropout off)
                    self.peft_model.eval()
                return self.peft_model.generate(*args, **kwargs)
            kwargs.setdefault("use_cache", False)
            return S3TEnsembleForCausalLM(self).generate(*args, **kwargs)


class S3TEnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """A thin causal-LM view of an S3T ensemble so ``generate`` works with several live shards.

    No KV cache: every decoding step re-encodes the whole sequence through each live shard.
    """

    base_model_prefix = "s3t"
    # attention runs inside the wrapped shards: accept whatever implementation their config names
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, s3t: S3TModel):
        base = unwrap(s3t.peft_model)
        super().__init__(base.config)
        self.s3t = s3t
        self.generation_config = copy.deepcopy(base.generation_config)

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        out = self.s3t(input_ids=input_ids, attention_mask=attention_mask)
        return CausalLMOutputWithPast(logits=out.logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def get_output_embeddings(self):
        return unwrap(self.s3t.peft_model).get_output_embeddings()
