"""Configuration of ``embedding_ga`` (first-epoch gradient ascent on the embedding layer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_unlearn.config import UnlearnConfig, check_choice, check_range

MODES = ("recorded", "iterative")
PARAM_SCOPES = ("embedding", "last_blocks", "all")
NORMALIZE = ("none", "global")
FUZZY_SCORERS = ("WRatio", "QRatio", "ratio", "partial_ratio", "token_sort_ratio", "token_set_ratio")
FUZZY_FIELDS = ("auto", "text", "question", "answer")
TIED_GRADIENTS = ("input", "input_and_output")


@dataclass
class EmbeddingGAConfig(UnlearnConfig):
    """Calibrated gradient ascent on the embedding layer (a reconstruction of Zagardo, arXiv 2406.09391).

    Example:
        >>> cfg = EmbeddingGAConfig(mode="recorded", eta=0.5, step_cap=20)
        >>> cfg.retain_tolerance
        0.5
    """

    mode: str = field(
        default="recorded",
        metadata={
            "help": "'recorded': add eta * (sum of the forget examples' recorded first-epoch embedding gradients) "
            "to the embedding rows, step by step; 'iterative': live gradient ascent on the forget examples, one "
            "example per step, restricted to `param_scope`."
        },
    )
    recording_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder written by EmbeddingGradientRecorder (mode 'recorded'). None: the folder the recorder "
            "attached to the model, or the `recording=` keyword."
        },
    )
    epochs: tuple[int, ...] = field(
        default=(1,),
        metadata={
            "help": "Recorded epochs whose gradients are summed (paper: first epoch only; (1, 2, 3) to compare)."
        },
    )
    eta: float = field(
        default=1.0,
        metadata={"help": "Step size of one recorded-gradient ascent step (mode 'recorded')."},
    )
    normalize: str = field(
        default="global",
        metadata={
            "help": "'global': scale the summed recorded gradient to unit L2 norm (token + position rows together), "
            "so eta is a parameter-space distance per step; 'none': use the raw sum."
        },
    )
    step_cap: int = field(default=50, metadata={"help": "Hard cap on ascent steps (both modes)."})
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "Stop as soon as the forget-set mean NLL reaches the target. False: fixed-step ascent "
            "(run step_cap steps; the retain tolerance still applies)."
        },
    )
    target_nll: float | None = field(
        default=None,
        metadata={
            "help": "Target forget-set mean NLL (nats per token). None: the mean NLL of the `holdout=` dataset under "
            "the model before unlearning; with neither, calibration cannot stop early and step_cap decides."
        },
    )
    retain_tolerance: float | None = field(
        default=0.5,
        metadata={
            "help": "Stop when the retain mean NLL rises more than this (nats per token) above its starting value. "
            "None disables the check."
        },
    )
    rollback: bool = field(
        default=True,
        metadata={"help": "Undo the last step (bit-exact) when it broke the retain tolerance."},
    )
    eval_every: int = field(default=1, metadata={"help": "Check the stopping rule every this many steps."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of the NLL evaluations."})
    retain_eval_size: int = field(
        default=64, metadata={"help": "Retain examples used for the tolerance check (a seeded subsample)."}
    )
    update_positions: bool = field(
        default=True,
        metadata={"help": "Also update a learned position table (GPT-2 wpe) with the recorded gradients."},
    )
    untie: bool = field(
        default=False,
        metadata={
            "help": "With tied input/output embeddings (GPT-2), give lm_head its own copy of the matrix first, so "
            "the ascent changes the INPUT embedding only. False: the shared matrix moves, so the output layer "
            "changes too (the recording holds the input path only)."
        },
    )
    tied_gradient: str = field(
        default="input",
        metadata={
            "help": "Mode 'recorded', tied input/output embeddings: which part of the shared matrix's recorded "
            "gradient is ascended. 'input': the input-embedding path only (sparse: the forget tokens' rows); "
            "'input_and_output': plus the output-layer (lm_head) path, i.e. the full gradient of the tied "
            "parameter (dense: every vocabulary row). Needs a recording made with the same tied_gradient."
        },
    )
    param_scope: str = field(
        default="embedding",
        metadata={
            "help": "Mode 'iterative': parameters the ascent may change: 'embedding' (token + position tables), "
            "'last_blocks' (the last `num_last_blocks` decoder blocks), or 'all'."
        },
    )
    num_last_blocks: int = field(default=2, metadata={"help": "Blocks updated with param_scope='last_blocks'."})
    shuffle: bool = field(
        default=False, metadata={"help": "Mode 'iterative': visit forget examples in a seeded order."}
    )
    fuzzy_threshold: float = field(
        default=90.0,
        metadata={"help": "request_text=: minimum rapidfuzz score (0-100) for a candidate to join the forget set."},
    )
    fuzzy_scorer: str = field(
        default="WRatio", metadata={"help": f"rapidfuzz.fuzz scorer used for request_text matching: {FUZZY_SCORERS}."}
    )
    fuzzy_field: str = field(
        default="auto",
        metadata={
            "help": "What request_text is matched against: 'auto' (the 'text' column, else question + answer), "
            "'text', 'question' or 'answer'."
        },
    )
    influence: bool = field(
        default=True,
        metadata={"help": "Report activation and LiSSA influence of the forget set before and after unlearning."},
    )
    influence_layer: int = field(
        default=-1, metadata={"help": "Hidden-state layer for activation scores (-1: last; 0: embeddings)."}
    )
    influence_examples: int = field(
        default=8, metadata={"help": "Forget/retain examples scored for influence (each side)."}
    )
    lissa_damping: float = field(default=0.01, metadata={"help": "LiSSA damping (added lambda * I)."})
    lissa_scale: float = field(
        default=25.0, metadata={"help": "LiSSA scale (must exceed the Hessian's top eigenvalue)."}
    )
    lissa_iterations: int = field(default=10, metadata={"help": "LiSSA recursion depth."})
    lissa_batch_size: int = field(default=8, metadata={"help": "Training examples per LiSSA Hessian sample."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("mode", self.mode, MODES)
        if isinstance(self.epochs, int):
            self.epochs = (self.epochs,)
        self.epochs = tuple(self.epochs)
        if not self.epochs or any(not isinstance(e, int) or isinstance(e, bool) or e < 1 for e in self.epochs):
            raise ValueError(f"epochs must be a non-empty tuple of 1-based ints, got {self.epochs!r}")
        check_range("eta", self.eta, 0, lo_open=True)
        check_choice("normalize", self.normalize, NORMALIZE)
        check_range("step_cap", self.step_cap, 1)
        if self.target_nll is not None:
            check_range("target_nll", self.target_nll, 0)
        if self.retain_tolerance is not None:
            check_range("retain_tolerance", self.retain_tolerance, 0)
        check_range("eval_every", self.eval_every, 1)
        check_range("eval_batch_size", self.eval_batch_size, 1)
        check_range("retain_eval_size", self.retain_eval_size, 1)
        check_choice("tied_gradient", self.tied_gradient, TIED_GRADIENTS)
        if self.tied_gradient == "input_and_output" and self.untie:
            raise ValueError(
                "tied_gradient='input_and_output' is the gradient of the TIED matrix; with untie=True the output "
                "layer gets its own copy, so use tied_gradient='input' (or untie=False)"
            )
        check_choice("param_scope", self.param_scope, PARAM_SCOPES)
        check_range("num_last_blocks", self.num_last_blocks, 1)
        check_range("fuzzy_threshold", self.fuzzy_threshold, 0, 100)
        check_choice("fuzzy_scorer", self.fuzzy_scorer, FUZZY_SCORERS)
        check_choice("fuzzy_field", self.fuzzy_field, FUZZY_FIELDS)
        check_range("influence_examples", self.influence_examples, 1)
        check_range("lissa_damping", self.lissa_damping, 0, 1)
        check_range("lissa_scale", self.lissa_scale, 0, lo_open=True)
        check_range("lissa_iterations", self.lissa_iterations, 1)
        check_range("lissa_batch_size", self.lissa_batch_size, 1)
        if self.mode == "recorded" and self.param_scope != "embedding":
            raise ValueError(
                f"param_scope={self.param_scope!r} needs mode='iterative': recordings hold embedding gradients only"
            )
