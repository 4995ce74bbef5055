"""S3TConfig: sharding, slicing, budget, block groups, sequence strategy, LoRA and per-stage training options."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.s3t.sequences import STRATEGIES

ENSEMBLES = ("logits", "logprobs")
WHEN_DEAD = ("raise", "base")
CACHE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class S3TConfig(UnlearnConfig):
    """Options of S3T training (arXiv 2406.16257). The inherited training fields (every TrainingArguments field)
    apply to EVERY stage; each stage's seed is derived from ``seed``.

    Example:
        >>> cfg = S3TConfig(n_shards=2, n_slices=3, budget=3, num_epochs=1, learning_rate=1e-3)
        >>> cfg.budget
        3
        >>> S3TConfig(strategy="greedy")
        Traceback (most recent call last):
        ...
        ValueError: strategy must be one of ['cyclic', 'bms', 'bms_budget', 'bms_prior', 'random', 'all'], got 'greedy'
    """

    n_shards: int = field(default=1, metadata={"help": "m: disjoint data shards, one ensemble member each."})
    n_slices: int = field(default=5, metadata={"help": "L: slices per shard = training stages (official LLM: 5)."})
    budget: int | None = field(
        default=None,
        metadata={"help": "B: training sequences per shard (None: L, a Latin square with 'cyclic'; 'all': L!)."},
    )
    layers_per_slice: int | None = field(
        default=None,
        metadata={"help": "k: transformer blocks per stage group (None: N // L); k * L must be <= N blocks."},
    )
    strategy: str = field(default="cyclic", metadata={"help": f"Sequence selection: one of {list(STRATEGIES)}."})
    deletion_priors: list[float] | None = field(
        default=None, metadata={"help": "bms_prior: deletion probability per slice (uniform when None)."}
    )
    sequences: Any = field(
        default=None,
        metadata={
            "help": "Explicit sequences overriding `strategy`: a list of (possibly partial) slice orders used by "
            "every shard, or a dict {shard: list}. A partial sequence trains only its prefix."
        },
    )
    group_column: str | None = field(
        default=None,
        metadata={
            "help": "Assign (shard, slice) by the hash of this column's value (e.g. 'author_id') instead of the uid: "
            "all examples of a group share one slice, so deleting a person's data cuts one slice, not all of them. "
            "None: by uid (official)."
        },
    )
    ungrouped_values: list[str] | None = field(
        default=None,
        metadata={
            "help": "Values of `group_column` that are not one group: each of their rows is placed by its own uid "
            "(e.g. ['world', 'real'] for general-knowledge QA that no deletion request names as a whole), so they "
            "spread over every slice instead of filling one. Needs `group_column`."
        },
    )
    cumulative: bool = field(
        default=True,
        metadata={"help": "Stage t trains on slices pi(1..t) (official); False: on slice pi(t) only (ablation)."},
    )
    ensemble: str = field(
        default="logits", metadata={"help": "Ensemble over live shards: mean of 'logits' (official) or 'logprobs'."}
    )
    lora: Any = field(
        default=None,
        metadata={
            "help": "LoraConfig kwargs shared by every stage adapter (r, lora_alpha, lora_dropout, target_modules, "
            "use_rslora, ...); layers_to_transform is set per stage. None: hf_unlearn defaults (r 8, alpha 16). "
            "Official LLM setting: {r: 32, lora_alpha: 64, lora_dropout: 0.05, use_rslora: true}."
        },
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Per-stage learning rate (official LLM 2e-5)."})
    num_train_epochs: float = field(
        default=3, metadata={"help": "Epochs per stage (official 3; alias num_epochs).", "aliases": ["--num_epochs"]}
    )
    lr_scheduler_type: str | None = field(
        default="linear", metadata={"help": "Per-stage LR schedule (official linear)."}
    )
    weight_decay: float = field(default=0.001, metadata={"help": "Per-stage AdamW weight decay (official 0.001)."})
    max_grad_norm: float = field(default=0.3, metadata={"help": "Per-stage gradient clipping (official 0.3)."})
    warmup_steps: float = field(
        default=0.03,
        metadata={
            "help": "Per-stage linear warm-up, a fraction of the steps when < 1 (official 0.03; alias warmup_ratio).",
            "aliases": ["--warmup_ratio"],
        },
    )
    cache_hidden_states: bool = field(
        default=False,
        metadata={
            "help": "Cache, once per example and shard, the base hidden states entering each stage's block group "
            "(the blocks below it are frozen and adapter-free), and run forward/backward only from the trained "
            "group upwards. Equal to the plain path up to float rounding (the cache is computed one unpadded "
            "example at a time); delete/retrain stay bitwise exact against scratch training with caching."
        },
    )
    cache_dtype: str = field(
        default="float32",
        metadata={
            "help": f"Storage dtype of the hidden-state cache: one of {list(CACHE_DTYPES)}. float16/bfloat16 halve "
            "the cache memory but round the states, so training no longer matches the uncached path to fp32 "
            "precision (exactness of delete/retrain against cached scratch training is unaffected)."
        },
    )
    shared_lower_blocks: bool = field(
        default=True,
        metadata={
            "help": "Ensemble inference (several live shards): run the base blocks below the lowest active stage "
            "group once and branch per shard from there (bitwise equal to running every shard in full)."
        },
    )
    retrain_copy: bool = field(
        default=False,
        metadata={
            "help": "retrain() on a private deep copy of the whole model (2x memory, the old behaviour). Default: "
            "train the new stages as new adapters on the SAME peft model while it keeps serving the old chains "
            "(each training micro-batch holds the model lock; the frozen base is shared)."
        },
    )
    when_dead: str = field(
        default="raise",
        metadata={
            "help": "When deletions have cut every shard to nothing: 'raise' (forward and generate raise until "
            "retrain()) or 'base' (serve the base model with every adapter off: it saw no training data, so it is "
            "exact too; a warning is logged and details['serving'] says so)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("when_dead", self.when_dead, WHEN_DEAD)
        check_range("n_shards", self.n_shards, 1)
        check_range("n_slices", self.n_slices, 1)
        if not isinstance(self.n_shards, int) or not isinstance(self.n_slices, int):
            raise ValueError(f"n_shards and n_slices must be ints, got {self.n_shards!r}, {self.n_slices!r}")
        check_choice("strategy", self.strategy, STRATEGIES)
        check_choice("ensemble", self.ensemble, ENSEMBLES)
        n_perm = math.factorial(self.n_slices)
        if self.strategy == "all":
            if self.budget not in (None, n_perm):
                raise ValueError(f"strategy 'all' trains all {n_perm} permutations; got budget={self.budget}")
            self.budget = n_perm
        elif self.budget is None:
            self.budget = self.n_slices
        if not isinstance(self.budget, int) or not 1 <= self.budget <= n_perm:
            raise ValueError(f"budget must be an int in [1, L! = {n_perm}], got {self.budget!r}")
        if self.layers_per_slice is not None:
            check_range("layers_per_slice", self.layers_per_slice, 1)
        if self.deletion_priors is not None and len(self.deletion_priors) != self.n_slices:
            raise ValueError(
                f"deletion_priors needs one value per slice ({self.n_slices}), got {len(self.deletion_priors)}"
            )
        if isinstance(self.lora, dict) and "layers_to_transform" in self.lora:
            raise ValueError("lora must not set layers_to_transform: S3T sets it per stage")
        check_choice("cache_dtype", self.cache_dtype, CACHE_DTYPES)
        if self.ungrouped_values is not None:
            if self.group_column is None:
                raise ValueError(
                    f"ungrouped_values={self.ungrouped_values!r} needs group_column (rows are already placed by uid)"
                )
            if isinstance(self.ungrouped_values, str) or not all(isinstance(v, str) for v in self.ungrouped_values):
                raise ValueError(f"ungrouped_values must be a list of strings, got {self.ungrouped_values!r}")
            self.ungrouped_values = list(self.ungrouped_values)
        if self.sequences is not None:
            self.sequences = (
                {int(k): v for k, v in self.sequences.items()} if isinstance(self.sequences, dict) else self.sequences
            )
            for seqs in self.sequences.values() if isinstance(self.sequences, dict) else [self.sequences]:
                for s in seqs:
                    if len(set(s)) != len(s) or not s or not all(0 <= int(x) < self.n_slices for x in s):
                        raise ValueError(f"sequence {s!r} must be non-empty distinct slices in [0, {self.n_slices})")

    def sequences_for(self, shard: int, seed: int = 0) -> list[list[int]]:
        """The sequences of one shard (explicit ``sequences`` or the strategy's)."""
        from hf_unlearn.methods.s3t.sequences import select_sequences

        if self.sequences is not None:
            seqs = self.sequences.get(shard, []) if isinstance(self.sequences, dict) else self.sequences
            return [[int(x) for x in s] for s in seqs]
        return select_sequences(
            self.strategy, self.n_slices, self.budget, seed=seed + 7919 * shard, priors=self.deletion_priors
        )
