"""Retrain: fine-tune the ORIGINAL base model on the retain set with the same recipe.

The base comes from ``base_model=`` (the model before fine-tuning) or ``model_init=`` (a callable returning it).
For a LoRA fine-tuned target (a PeftModel) with neither, the base is a copy of the target with its adapters
removed (``unload()``, not merged) and the same LoraConfig is trained afresh. The passed model is never modified.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.training.finetune import finetune
from hf_unlearn.training.lora import is_peft_model


@dataclass
class RetrainConfig(UnlearnConfig):
    """The fine-tuning recipe to repeat on the retain set (use the target's own recipe)."""

    learning_rate: float = field(default=5e-4, metadata={"help": "Fine-tuning learning rate (same as the target's)."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "LR schedule of the original recipe."})


class Retrain(UnlearningMethod):
    name = "retrain"
    config_cls = RetrainConfig
    description = (
        "Retraining from scratch on the training data minus the forget set, with the same recipe: the exact gold "
        "standard every other method is compared against."
    )
    unlearn_arguments = ("base_model", "model_init")
    exact = True
    needs_retain = True
    paper = "Retraining from scratch on D \\ F (the exact-unlearning gold standard)"

    @classmethod
    def benchmark_run(cls, ctx: Any, unlearn: Any) -> Any:
        """``retrain`` on the benchmark IS the gold fine-tune (the same ``finetune`` call on the retain split with
        the same recipe, which ``tests/test_baselines.py`` checks equals this method): reuse it, with its cost."""
        from hf_unlearn.result import UnlearnResult

        s, ft = ctx.setting, ctx.gold_ft
        cfg = RetrainConfig(
            num_epochs=s.ft_epochs,
            learning_rate=s.ft_lr,
            batch_size=s.ft_batch_size,
            max_length=s.max_length,
            lora=s.lora,
            seed=s.seed,
        )
        return UnlearnResult(
            model=ctx.gold,
            method="retrain",
            config=cfg,
            forget_uids=list(ctx.forget["uid"]),
            timings={"unlearn": ft.wall_time},
            memory={"peak_rss_mib": round(ft.peak_memory_mib, 1)},
            details={
                "steps": ft.steps,
                "train_loss": ft.train_loss,
                "retain_size": len(ctx.retain),
                "note": "the gold model's fine-tune on the retain split",
            },
            tokenizer=ctx.tokenizer,
            tokens_processed=ft.tokens,
        )

    def unlearn(
        self,
        model: Any,
        tokenizer: Any,
        forget,
        retain=None,
        *,
        base_model: Any = None,
        model_init: Any = None,
        **kwargs: Any,
    ) -> MethodOutput:
        c = self.config
        if retain is None or len(retain) == 0:
            raise ValueError("retrain needs a non-empty retain set (pass retain= or train_dataset=)")
        lora = c.lora
        if model_init is not None:
            base = model_init()
        elif base_model is not None:
            base = copy.deepcopy(base_model)
        elif is_peft_model(model):
            peft_cfg = copy.deepcopy(model.peft_config[model.active_adapter])
            peft_cfg.inference_mode = False
            base = copy.deepcopy(model).unload()
            lora = peft_cfg if lora is None else lora
        else:
            raise ValueError(
                "retrain needs the model before fine-tuning: pass base_model= (or model_init=), or unlearn a LoRA "
                "fine-tuned PeftModel (its base is then recovered by removing the adapter)"
            )
        out = finetune(
            base,
            tokenizer,
            retain,
            **{
                **c.extra_training_arguments(),  # any further TrainingArguments field of the config
                "lora": lora,
                "num_epochs": c.num_epochs,
                "learning_rate": c.learning_rate,
                "batch_size": c.batch_size,
                "max_length": c.max_length,
                "template": c.template,
                "seed": c.seed,
                "max_steps": c.max_steps,
                "gradient_accumulation_steps": c.gradient_accumulation_steps,
                "weight_decay": c.weight_decay,
                "warmup_ratio": c.warmup_ratio,
                "lr_scheduler_type": c.lr_scheduler_type,
                "disable_tqdm": c.disable_tqdm,
                "bf16": c.bf16,
            },
        )
        details = {"steps": out.steps, "train_loss": out.train_loss, "tokens": out.tokens, "retain_size": len(retain)}
        return MethodOutput(model=out.model, details=details, tokens_processed=out.tokens)
