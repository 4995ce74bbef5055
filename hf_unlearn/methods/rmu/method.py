"""RMU, Representation Misdirection for Unlearning (Li et al., *The WMDP Benchmark: Measuring and Reducing Malicious
Use With Unlearning*, ICML 2024, arXiv 2403.03218).

With h(x) the output of block ``layer`` (the residual stream after it), h_frozen the same for the model before
unlearning, u a random vector with entries uniform in [0, 1) normalised to unit length (drawn once, from ``seed``)
and c the steering coefficient:

    L_forget = E_F[ (1/|x|) * sum_t mean_d (h_t,d(x) - c * u_d)^2 ]
    L_retain = E_R[ (1/|x|) * sum_t mean_d (h_t,d(x) - h_frozen_t,d(x))^2 ]
    L        = L_forget + alpha * L_retain

The paper writes the per-token term as a squared L2 norm; the official code (and OpenUnlearning) use the mean over
the d hidden units, a factor 1/d, which is what the published alpha and c were tuned with. Only the MLPs of blocks
``layer-2 .. layer`` train (the official code: only their output projection, ``down_proj``; ``update="mlp"`` trains
every MLP weight). The sum runs over the answer tokens (``token_positions="answer"``, as OpenUnlearning does for QA
data) or every attended token (``"all"``, the official code on raw text, minus its padding positions).

Defaults: the paper's Zephyr-7B setting, c = 6.5, alpha = 1200, lr 5e-5, steered layer 7 of 32 and updated layers
5, 6, 7; for another depth N the layer is round(7 N / 32) (SmolLM2's 30 blocks: 7; a 4-block model: 1).

The frozen model is never a second copy: with ``lora`` it is the same model with the unlearning adapter disabled; in
full fine-tuning only the few updated tensors are copied, and the frozen forward runs the model with those originals
swapped in (``torch.func.functional_call``), stopping after block ``layer``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from torch import nn

from hf_unlearn.config import UnlearnConfig, check_choice, check_range
from hf_unlearn.methods.base import MethodOutput, UnlearningMethod
from hf_unlearn.models import decoder_layers
from hf_unlearn.registry import Paper
from hf_unlearn.training.engine import run_unlearning
from hf_unlearn.training.lora import is_peft_model, make_lora_config
from hf_unlearn.training.trainer import UnlearnTrainer, model_inputs

PAPER_LAYER, PAPER_DEPTH = 7, 32  # Zephyr-7B: steer block 7 of 32, update blocks 5, 6, 7
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_MLP_OUT_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "fc_out")
_FLAT_MLP = ("fc1", "fc2")  # families whose block holds the MLP projections itself (OPT)


@dataclass
class RMUConfig(UnlearnConfig):
    learning_rate: float = field(default=5e-5, metadata={"help": "Optimizer learning rate (paper: 5e-5)."})
    layer: Any = field(
        default=None,
        metadata={
            "help": "Block whose output is steered (0-based). None: round(7 * n_blocks / 32), the paper's block "
            "7 of 32 scaled to the model's depth."
        },
    )
    update_layers: Any = field(
        default=None,
        metadata={
            "help": "Blocks whose MLP is trained (each <= layer). None: layer-2, layer-1, layer (clipped at 0)."
        },
    )
    update: str = field(
        default="mlp_out",
        metadata={
            "help": "'mlp_out': only each MLP's output projection (down_proj / c_proj; the official code); 'mlp': "
            "every MLP weight."
        },
    )
    steering_coeff: float = field(default=6.5, metadata={"help": "Norm c of the random target vector (paper: 6.5)."})
    alpha: float = field(default=1200.0, metadata={"help": "Weight of the retain activation term (paper: 1200)."})
    token_positions: str = field(
        default="answer", metadata={"help": "Tokens the activation losses average over: 'answer' or 'all'."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layer is not None and (
            isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0
        ):
            raise ValueError(f"layer must be None or a block index >= 0, got {self.layer!r}")
        if self.update_layers is not None:
            ul = self.update_layers
            if (
                not isinstance(ul, (list, tuple))
                or not ul
                or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ul)
            ):
                raise ValueError(f"update_layers must be None or a non-empty list of block indices >= 0, got {ul!r}")
            self.update_layers = sorted(set(ul))
        check_choice("update", self.update, ("mlp_out", "mlp"))
        check_range("steering_coeff", self.steering_coeff, 0, lo_open=True)
        check_range("alpha", self.alpha, 0)
        check_choice("token_positions", self.token_positions, ("answer", "all"))


def resolve_layers(
    n_layers: int, layer: int | None = None, update_layers: list[int] | None = None
) -> tuple[int, list[int]]:
    """The steered block and the updated blocks for a model with ``n_layers`` blocks.

    Raises:
        ValueError: a block index outside the model, or an updated block after the steered one (it could not
        change the steered activations).

    Example:
        >>> resolve_layers(32), resolve_layers(30), resolve_layers(4), resolve_layers(2)
        ((7, [5, 6, 7]), (7, [5, 6, 7]), (1, [0, 1]), (0, [0]))
    """
    if layer is None:
        layer = min(n_layers - 1, math.floor(PAPER_LAYER * n_layers / PAPER_DEPTH + 0.5))
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is outside the model's blocks 0..{n_layers - 1}")
    if update_layers is None:
        update_layers = list(range(max(0, layer - 2), layer + 1))
    bad = [i for i in update_layers if not 0 <= i <= layer]
    if bad:
        raise ValueError(
            f"update_layers {bad} must lie in 0..{layer} (the steered layer): a later block cannot change its output"
        )
    return layer, sorted(update_layers)


def rmu_activation_loss(act: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of the per-token mean squared error, averaged over the masked tokens of each sequence.

    Args:
        act: ``[B, T, D]`` activations; target: broadcastable to it (``[D]`` control vector or ``[B, T, D]``).
        mask: ``[B, T]`` bool, the tokens that count.

    Example:
        >>> import torch
        >>> act, mask = torch.ones(1, 2, 2), torch.tensor([[True, False]])
        >>> float(rmu_activation_loss(act, torch.zeros(2), mask))
        1.0
    """
    sq = (act.float() - target.float()).pow(2).mean(-1)  # [B, T]
    m = mask.to(sq.dtype)
    return ((sq * m).sum(1) / m.sum(1).clamp(min=1)).mean()


def random_control_vector(dim: int, steering_coeff: float, seed: int) -> torch.Tensor:
    """``c * u / |u|`` with u uniform in [0, 1)^dim from a generator seeded with ``seed`` (the same on every process).

    Example:
        >>> v = random_control_vector(8, 6.5, seed=0)
        >>> round(float(v.norm()), 4), bool((v >= 0).all())
        (6.5, True)
    """
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return steering_coeff * u / u.norm()


class _Stop(Exception):
    """Raised by the capture hook to end a no-grad forward pass after the steered block."""


def block_output(forward: Callable[[], Any], block: nn.Module, stop: bool = False) -> torch.Tensor:
    """Run ``forward()`` and return ``block``'s output hidden states ``[B, T, D]``.

    With ``stop`` the pass ends right after ``block`` (only for passes outside DDP: no gradient is synchronised).

    Args:
        forward: runs the model (its return value is ignored).
        block: the module whose output is captured (a decoder block).
        stop: end the forward pass right after ``block``.

    Example:
        >>> import torch
        >>> from hf_unlearn.models import decoder_layers, tiny_causal_lm
        >>> model, tok = tiny_causal_lm("gpt2", texts=["Question: Who? Answer: Ann."] * 8, num_layers=2)
        >>> ids = torch.tensor([[1, 5, 9]])
        >>> block_output(lambda: model(ids), decoder_layers(model)[0], stop=True).shape
        torch.Size([1, 3, 64])
        >>> mlp_modules(model, [0, 1], "mlp_out")
        ['transformer.h.0.mlp.c_proj', 'transformer.h.1.mlp.c_proj']
    """
    cache: dict[str, torch.Tensor] = {}

    def hook(_module, _args, out):
        cache["h"] = out[0] if isinstance(out, (tuple, list)) else out
        if stop:
            raise _Stop

    handle = block.register_forward_hook(hook)
    try:
        forward()
    except _Stop:
        pass
    finally:
        handle.remove()
    return cache["h"]


def mlp_modules(model: nn.Module, blocks: list[int], update: str) -> list[str]:
    """Names (in ``model.named_modules()``) of the MLP modules RMU trains in ``blocks`` (see :func:`block_output`).

    Args:
        model: the causal LM (or a PeftModel around it).
        blocks: block indices.
        update: ``"mlp_out"`` (each MLP's output projection) or ``"mlp"`` (every MLP module with weights).

    Raises:
        TypeError: a block without a recognisable MLP / output projection (names what it has).
    """
    layers = decoder_layers(model)
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for i in blocks:
        block = layers[i]
        mlp = next((getattr(block, n) for n in _MLP_NAMES if hasattr(block, n)), None)
        if mlp is None and all(hasattr(block, n) for n in _FLAT_MLP):  # OPT: fc1 / fc2 directly on the block
            fc_in, fc_out = (getattr(block, n) for n in _FLAT_MLP)
            out += [names[id(fc_out)]] if update == "mlp_out" else [names[id(fc_in)], names[id(fc_out)]]
            continue
        if mlp is None:
            raise TypeError(f"block {i} ({type(block).__name__}) has no MLP among {_MLP_NAMES} (nor {_FLAT_MLP})")
        if update == "mlp_out":
            proj = next((getattr(mlp, n) for n in _MLP_OUT_NAMES if hasattr(mlp, n)), None)
            if proj is None:
                kids = [n for n, _ in mlp.named_children()]
                raise TypeError(f"no MLP output projection among {_MLP_OUT_NAMES} in block {i}; it has {kids}")
            out.append(names[id(proj)])
        else:
            out += [
                names[id(m)] for m in mlp.modules() if m is not mlp and any(True for _ in m.parameters(recurse=False))
            ]
    return out


class RMUTrainer(UnlearnTrainer):
    """RMU's loss on paired forget/retain batches (block output captured with a forward hook)."""

    def __init__(
        self,
        *args: Any,
        block: nn.Module,
        frozen_params: dict[str, torch.Tensor] | None,
        steering_coeff: float,
        alpha: float,
        token_positions: str,
        seed: int,
        **kw: Any,
    ):
        super().__init__(*args, **kw)
        self.block, self.frozen_params = block, frozen_params
        self.steering_coeff, self.alpha, self.token_positions, self.seed = steering_coeff, alpha, token_positions, seed
        self._u: torch.Tensor | None = None

    def control_vector(self, dim: int) -> torch.Tensor:
        """The target of the forget activations, drawn once (see :func:`random_control_vector`)."""
        if self._u is None:
            self._u = random_control_vector(dim, self.steering_coeff, self.seed)
        return self._u

    def _mask(self, batch: dict[str, Any]) -> torch.Tensor:
        if self.token_positions == "answer":
            return batch["labels"].ne(-100)
        return batch["attention_mask"].bool()

    @torch.no_grad()
    def frozen_activations(self, batch: dict[str, Any]) -> torch.Tensor:
        """The steered block's output under the model before unlearning (adapter disabled or original tensors)."""
        target = extract_model_from_parallel(self.model)
        was_training = target.training
        target.eval()
        try:
            if self.frozen_params is None:
                with target.disable_adapter():
                    return block_output(lambda: target(**model_inputs(batch)), self.block, stop=True)
            params = {k: v.to(batch["input_ids"].device) for k, v in self.frozen_params.items()}
            return block_output(
                lambda: torch.func.functional_call(target, params, args=(), kwargs=model_inputs(batch)),
                self.block,
                stop=True,
            )
        finally:
            target.train(was_training)

    def unlearning_loss(self, model, forget, retain):
        act_f = block_output(lambda: model(**model_inputs(forget)), self.block)  # [B, T, D]
        u = self.control_vector(act_f.shape[-1]).to(act_f.device)
        loss = rmu_activation_loss(act_f, u, self._mask(forget))
        if retain is not None:
            act_r = block_output(lambda: model(**model_inputs(retain)), self.block)
            loss = loss + self.alpha * rmu_activation_loss(act_r, self.frozen_activations(retain), self._mask(retain))
        return loss


class RMU(UnlearningMethod):
    name = "rmu"
    config_cls = RMUConfig
    reference = Paper(
        title="The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
        authors="Nathaniel Li and Alexander Pan and Anjali Gopal and Summer Yue and Daniel Berrios and others",
        arxiv="2403.03218",
        year=2024,
        venue="ICML 2024",
    )
    description = (
        "RMU (Representation Misdirection for Unlearning): the MLPs of a few middle blocks are trained so that "
        "the activations of one block on the forget set point toward a scaled random vector, while on the retain "
        "set they stay close to the original model's. Approximate baseline."
    )
    benchmark_defaults = {"num_epochs": 4, "learning_rate": 1e-2, "batch_size": 8, "alpha": 10.0}
    needs_retain = True
    paper = "Li et al., The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning (arXiv 2403.03218)"

    def unlearn(self, model: Any, tokenizer: Any, forget, retain=None, **kwargs: Any) -> MethodOutput:
        c = self.config
        layer, update_layers = resolve_layers(len(decoder_layers(model)), c.layer, c.update_layers)
        block = decoder_layers(model)[layer]
        restore: dict[str, bool] = {}
        if c.lora is None or c.lora is False:
            # train the model's own parameters (a PeftModel: its active adapter) inside the chosen MLPs only
            prefixes = tuple(n + "." for n in mlp_modules(model, update_layers, c.update))
            restore = {n: p.requires_grad for n, p in model.named_parameters()}
            trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefixes)]
            if not trainable:
                raise ValueError(
                    f"rmu: no trainable parameter in the MLPs of blocks {update_layers}: unfreeze them or pass lora="
                )
            chosen = set(trainable)
            for n, p in model.named_parameters():
                p.requires_grad_(n in chosen)
            frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n in chosen}
            ref_mode = "copy"
        else:
            model = self._attach_adapter(model, update_layers)
            frozen, ref_mode = None, "adapter_disabled"
        try:
            model, info = run_unlearning(
                RMUTrainer,
                model,
                tokenizer,
                forget,
                retain,
                c,
                model_ready=True,
                reference_mode=ref_mode,
                block=block,
                frozen_params=frozen,
                steering_coeff=c.steering_coeff,
                alpha=c.alpha,
                token_positions=c.token_positions,
                seed=c.seed,
            )
        finally:
            params = dict(model.named_parameters())
            for n, flag in restore.items():
                params[n].requires_grad_(flag)
        info.update(layer=layer, update_layers=update_layers)
        return MethodOutput(model=model, details=info, tokens_processed=info["tokens"])

    def _attach_adapter(self, model: Any, update_layers: list[int]) -> Any:
        """A fresh LoRA adapter on the chosen MLP modules only (RMU decides the targets)."""
        from peft import LoraConfig, get_peft_model

        c = self.config
        if is_peft_model(model):
            raise ValueError(
                "config.lora adds a fresh unlearning adapter, but the model already has peft adapters: merge them "
                "first (model = model.merge_and_unload()) or pass lora=None to unlearn inside the existing adapter"
            )
        if isinstance(c.lora, LoraConfig):
            raise ValueError(
                "rmu chooses the adapter's target modules itself: pass lora=True or a dict of LoraConfig options"
            )
        fixed = sorted({"target_modules", "layers_to_transform"} & set(c.lora if isinstance(c.lora, dict) else {}))
        if fixed:
            raise ValueError(
                f"rmu sets {fixed} itself (the MLPs of update_layers); remove them from lora= and use update_layers / "
                "update instead"
            )
        targets = mlp_modules(model, update_layers, c.update)
        return get_peft_model(model, make_lora_config(model, c.lora, target_modules=targets))
