"""Data loading, uid handling, tokenization and collators."""

from hf_unlearn.data.loading import (
    UID,
    column,
    content_uid,
    ensure_uids,
    exclude_uids,
    load_examples,
    resolve_examples,
    select_examples,
    select_uids,
)
from hf_unlearn.data.tokenization import (
    IGNORE_INDEX,
    PairedCollator,
    PairedDataset,
    UnlearnCollator,
    collator_for,
    encode_examples,
    encode_qa,
    format_prompt,
    tokenize_any,
    tokenize_qa,
    tokenize_text,
)

__all__ = [
    "UID",
    "IGNORE_INDEX",
    "column",
    "content_uid",
    "ensure_uids",
    "exclude_uids",
    "load_examples",
    "resolve_examples",
    "select_examples",
    "select_uids",
    "PairedCollator",
    "PairedDataset",
    "UnlearnCollator",
    "collator_for",
    "encode_examples",
    "encode_qa",
    "format_prompt",
    "tokenize_any",
    "tokenize_qa",
    "tokenize_text",
]
