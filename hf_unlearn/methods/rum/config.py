"""RUMConfig: how to score, group and unlearn the forget set group by group."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.rum.scores import INFERENCE_SCORES, LEARNING_EVENTS

NEGGRAD_PLUS = "neggrad_plus"
#: official per-group NegGrad+ settings of RUM (low, medium, high memorization), relative to the config's recipe:
#: alpha 0.99 / 0.97 / 0.97; the high group gets twice the epochs and a tenth of the learning rate
#: (official: 5 / 5 / 10 epochs at lr 0.01 / 0.01 / 0.001).
OFFICIAL_ALPHA = (0.99, 0.97, 0.97)
OFFICIAL_EPOCH_SCALE = (1.0, 1.0, 2.0)
OFFICIAL_LR_SCALE = (1.0, 1.0, 0.1)
RETAIN_MODES = ("exclude_forget", "keep_later_groups")
GROUPINGS = ("top_median_bottom", "quantiles")
EPOCH_OVER = ("retain", "forget")
COMPUTABLE_SCORES = INFERENCE_SCORES + LEARNING_EVENTS


@dataclass
class RUMConfig(UnlearnConfig):
    """Options of ``rum``; the UnlearnConfig recipe fields are the base recipe every group scales or overrides."""

    learning_rate: float = field(default=1e-3, metadata={"help": "Base learning rate (scaled per group)."})
    num_train_epochs: float = field(
        default=4,
        metadata={
            "help": "Base epochs over each group (scaled per group; alias num_epochs).",
            "aliases": ["--num_epochs"],
        },
    )
    calibrate: bool = field(
        default=False,
        metadata={
            "help": "Calibrated early stopping of each group (docs/calibration.md). Off by default for RUM: on the "
            "demo benchmark no group reached the holdout target or the retain tolerance, so the checks only cost "
            "time (benchmarks/results/calibration_demo.md). True (with holdout=) turns it on."
        },
    )
    score: str = field(
        default="loss",
        metadata={
            "help": "Memorization score used to refine F when no scores= are passed: an inference-time score "
            f"computed from the model {list(INFERENCE_SCORES)}, or a learning event {list(LEARNING_EVENTS)} read "
            "from the recorder= passed to unlearn. Only a label when scores= are given."
        },
    )
    grouping: str = field(
        default="top_median_bottom",
        metadata={
            "help": "'top_median_bottom': bottom n, the n closest to the median, top n (n = group_size); "
            "'quantiles': n_groups equal-count groups by score."
        },
    )
    group_size: int | None = field(
        default=None,
        metadata={"help": "n of top_median_bottom (None: a partition of F in thirds; 3n must be <= |F|)."},
    )
    n_groups: int = field(default=3, metadata={"help": "Number of groups for grouping='quantiles'."})
    rest: str = field(
        default="nearest",
        metadata={
            "help": "Forget examples outside the three groups when 3n < |F|: 'nearest' (join the group whose "
            "median score is closest) or 'skip' (official: only the groups are unlearned; the rest is NOT forgotten)."
        },
    )
    group_methods: Any = field(
        default=NEGGRAD_PLUS,
        metadata={
            "help": "Algorithm per group, low memorization first: one name for all groups or a list with one per "
            "group. 'neggrad_plus' (built in) or any registered method name (e.g. 'grad_diff', 'npo')."
        },
    )
    alphas: Any = field(
        default=OFFICIAL_ALPHA,
        metadata={"help": "NegGrad+ alpha per group: loss = alpha*CE(retain) - (1-alpha)*CE(forget)."},
    )
    epoch_scales: Any = field(default=OFFICIAL_EPOCH_SCALE, metadata={"help": "num_epochs multiplier per group."})
    lr_scales: Any = field(default=OFFICIAL_LR_SCALE, metadata={"help": "learning_rate multiplier per group."})
    group_overrides: Any = field(
        default=None,
        metadata={
            "help": "List (one per group) of dicts of config fields of that group's method, applied last "
            "(e.g. [{}, {}, {'num_epochs': 8, 'beta': 0.2}])."
        },
    )
    retain_mode: str = field(
        default="exclude_forget",
        metadata={
            "help": "'exclude_forget': the retain set excludes the WHOLE forget set at every group; "
            "'keep_later_groups' (official RUM): groups not unlearned yet stay in the retain set."
        },
    )
    min_k: float = field(default=0.4, metadata={"help": "k of the Min-K% score."})
    epoch_over: str = field(
        default="retain",
        metadata={
            "help": "What one NegGrad+ epoch passes over. 'retain' (official RUM loop): the group's retain set, "
            "each retain batch paired with a forget batch, the forget group cycled (|R_g|/batch_size steps); "
            "'forget': the forget group, each forget batch paired with a retain batch (|F_g|/batch_size steps, "
            "about |R|/|F| times fewer). Other group methods use their own loop."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("grouping", self.grouping, GROUPINGS)
        check_choice("retain_mode", self.retain_mode, RETAIN_MODES)
        check_choice("rest", self.rest, ("nearest", "skip"))
        check_choice("epoch_over", self.epoch_over, EPOCH_OVER)
        if not isinstance(self.score, str) or not self.score:
            raise ValueError(f"score must be a non-empty str, got {self.score!r}")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(f"group_size must be a positive int or None, got {self.group_size!r}")
        if not isinstance(self.n_groups, int) or self.n_groups < 1:
            raise ValueError(f"n_groups must be a positive int, got {self.n_groups!r}")
        check_range("min_k", self.min_k, 0, 1, lo_open=True)
        for name in ("alphas", "epoch_scales", "lr_scales", "group_overrides"):
            v = getattr(self, name)
            if isinstance(v, tuple):
                setattr(self, name, list(v))
        for a in self.alphas if isinstance(self.alphas, list) else [self.alphas]:
            check_range("alphas", a, 0, 1)
        for name in ("epoch_scales", "lr_scales"):
            v = getattr(self, name)
            for s in v if isinstance(v, list) else [v]:
                check_range(name, s, 0, lo_open=True)
        if self.group_overrides is not None and not (
            isinstance(self.group_overrides, list) and all(isinstance(d, dict) for d in self.group_overrides)
        ):
            raise ValueError(f"group_overrides must be None or a list of dicts, got {self.group_overrides!r}")
        methods = self.group_methods if isinstance(self.group_methods, list) else [self.group_methods]
        if isinstance(self.group_methods, tuple):
            self.group_methods = methods = list(self.group_methods)
        from hf_unlearn.registry import list_methods

        valid = [NEGGRAD_PLUS] + [m for m in list_methods() if m != "rum"]
        for m in methods:
            check_choice("group_methods", m, valid)

    @property
    def num_groups(self) -> int:
        return 3 if self.grouping == "top_median_bottom" else self.n_groups

    def per_group(self, name: str, g: int, k: int) -> Any:
        """Value of the per-group option ``name`` for group ``g`` of ``k`` (low = 0).

        A scalar applies to every group; a list of length k is indexed; the 3-entry official defaults map to k
        groups as low -> first, high -> last, medium -> the ones between.

        Raises:
            ValueError: a list whose length is neither k nor 3.
        """
        v = getattr(self, name)
        if not isinstance(v, list):
            return v
        if len(v) == k:
            return v[g]
        if len(v) == 3:
            return v[0] if g == 0 else v[2] if g == k - 1 else v[1]
        raise ValueError(f"{name} has {len(v)} entries but there are {k} groups (give 1, 3 or {k})")
