"""Forget / retain sets from anywhere `datasets` reads, with stable string uids.

A source is a ``datasets.Dataset``, a ``DatasetDict`` (with ``split``), a list of dicts, a dict of lists, a local
file (json / jsonl / csv / parquet), a folder written by ``save_to_disk``, a data folder, or a Hub id (same code
path: ``datasets.load_dataset``). Every example carries a string ``uid``: kept when present, otherwise derived
deterministically from the example's content. Duplicate uids are an error.

Example:
    >>> from hf_unlearn.data import load_examples, select_uids
    >>> ds = load_examples([{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}])
    >>> ds.column_names
    ['question', 'answer', 'uid']
    >>> len(select_uids(ds, [ds[1]["uid"]]))
    1
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, DatasetDict

UID = "uid"


def column(ds: Dataset, name: str) -> list[Any]:
    """One column of ``ds`` as a Python list, read in one Arrow call.

    ``datasets`` 4+ returns a lazy ``Column`` for ``ds[name]`` whose iteration formats one row at a time (about 20 us
    a row); slicing it reads the whole column at once. Honours ``select``/``shuffle`` index mappings.

    >>> column(Dataset.from_dict({"uid": ["a", "b", "c"]}).select([2, 0]), "uid")
    ['c', 'a']
    """
    return list(ds[name][:])


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def content_uid(example: dict[str, Any]) -> str:
    """A deterministic uid from an example's content (sha256 of its sorted JSON, 16 hex chars).

    >>> content_uid({"a": 1, "b": "x"}) == content_uid({"b": "x", "a": 1})
    True
    """
    blob = json.dumps(example, sort_keys=True, ensure_ascii=False, default=str).encode()
    return "h-" + hashlib.sha256(blob).hexdigest()[:16]


def ensure_uids(ds: Dataset, uid_column: str = UID) -> Dataset:
    """Make sure ``ds`` has a unique string ``uid`` column.

    Missing uids are derived from content (:func:`content_uid`); non-string uids are cast to str.

    Raises:
        ValueError: if uids are duplicated (names up to five of them) or the dataset is empty.
    """
    if len(ds) == 0:
        raise ValueError("the dataset is empty: a forget/retain set needs at least one example")
    if uid_column != UID and uid_column in ds.column_names and UID not in ds.column_names:
        ds = ds.rename_column(uid_column, UID)
    if UID not in ds.column_names:
        ds = ds.map(lambda ex: {UID: content_uid(dict(ex))}, desc="adding uids")
    elif ds.features[UID].dtype != "string":
        ds = ds.cast_column(UID, datasets.Value("string"))
    counts = Counter(column(ds, UID))
    dups = [u for u, c in counts.items() if c > 1]
    if dups:
        raise ValueError(
            f"duplicate uids in dataset ({len(dups)} duplicated, e.g. {dups[:5]}); every example needs a unique "
            "uid: drop duplicate rows or provide a unique 'uid' column"
        )
    return ds


def _load_path(path: Path, split: str | None, **kwargs: Any) -> Dataset | DatasetDict:
    if path.is_file():
        builder = _FILE_BUILDERS.get("".join(path.suffixes[-1:]).lower())
        if builder is None:
            raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use one of {sorted(_FILE_BUILDERS)}")
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        except Exception as err:  # noqa: BLE001 - a malformed file: name it and the parser's reason
            cause = err.__cause__ or err.__context__ or err
            raise ValueError(
                f"could not read {path} as {builder} ({type(cause).__name__}: {str(cause).splitlines()[0][:300]}); "
                "check that the file is well-formed"
            ) from err
    if (
        (path / "dataset_dict.json").exists()
        or (path / "state.json").exists()
        or (path / "dataset_info.json").exists()
    ):
        try:
            return datasets.load_from_disk(str(path))
        except FileNotFoundError as err:  # a partial save: name it instead of a stack trace
            raise ValueError(f"{path} looks like a save_to_disk folder but is incomplete or corrupt: {err}") from err
    return datasets.load_dataset(str(path), **kwargs)


def load_examples(
    source: Any,
    split: str | None = None,
    *,
    uid_column: str = UID,
    **load_kwargs: Any,
) -> Dataset:
    """Load a set of examples from any supported source and give every example a unique string uid.

    Args:
        source: Dataset, DatasetDict, list of dicts, dict of lists, local file or folder path, or a Hub id.
        split: split to take from a DatasetDict / Hub dataset (required when there are several).
        uid_column: name of the column that holds the ids (renamed to ``uid``).
        **load_kwargs: passed to ``datasets.load_dataset`` (e.g. ``name=`` for a Hub config).

    Returns:
        A ``datasets.Dataset`` with a unique string ``uid`` column.

    Raises:
        ValueError: empty data, duplicate uids, unknown split, unsupported file, or a Hub id that cannot be loaded.
    """
    if isinstance(source, Dataset):
        ds = source
    elif isinstance(source, DatasetDict):
        ds = _pick_split(source, split)
    elif isinstance(source, list):
        if not source:
            raise ValueError("the list of examples is empty: a forget/retain set needs at least one example")
        if not all(isinstance(x, dict) for x in source):
            raise ValueError("a list source must hold dicts (examples); a list of uids needs a training dataset")
        ds = Dataset.from_list(source)
    elif isinstance(source, dict):
        ds = Dataset.from_dict(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.exists():
            loaded = _load_path(path, split, **load_kwargs)
        else:
            try:
                loaded = datasets.load_dataset(str(source), split=split, **load_kwargs)
            except Exception as err:  # noqa: BLE001 - re-raised with the source named
                raise ValueError(
                    f"could not load {str(source)!r}: it is not an existing local path, and loading it as a Hub "
                    f"dataset failed ({type(err).__name__}: {err})"
                ) from err
        ds = _pick_split(loaded, split) if isinstance(loaded, DatasetDict) else loaded
    else:
        raise ValueError(
            f"unsupported data source of type {type(source).__name__}; pass a datasets.Dataset, a DatasetDict with "
            "split=, a list of dicts, a local file/folder path or a Hub id"
        )
    return ensure_uids(ds, uid_column=uid_column)


def _pick_split(dd: DatasetDict, split: str | None) -> Dataset:
    if split is None:
        if len(dd) == 1:
            return next(iter(dd.values()))
        raise ValueError(f"this dataset has several splits {sorted(dd)}: pass split=")
    if split not in dd:
        raise ValueError(f"unknown split {split!r}; available splits: {sorted(dd)}")
    return dd[split]


def select_uids(ds: Dataset, uids: Iterable[str]) -> Dataset:
    """The rows of ``ds`` whose uid is in ``uids`` (in ``ds`` order).

    Raises:
        ValueError: if ``uids`` is empty.
        KeyError: naming the uids that ``ds`` does not contain.
    """
    wanted = [str(u) for u in uids]
    if not wanted:
        raise ValueError("empty list of uids: name at least one example to select")
    index = {u: i for i, u in enumerate(column(ds, UID))}
    unknown = [u for u in wanted if u not in index]
    if unknown:
        raise KeyError(f"{len(unknown)} unknown uid(s), e.g. {unknown[:5]}; they are not in the training dataset")
    rows = sorted({index[u] for u in wanted})
    return ds.select(rows)


def exclude_uids(ds: Dataset, uids: Iterable[str]) -> Dataset:
    """The rows of ``ds`` whose uid is NOT in ``uids``."""
    drop = {str(u) for u in uids}
    keep = [i for i, u in enumerate(column(ds, UID)) if u not in drop]
    return ds.select(keep)


def select_examples(
    ds: Dataset,
    *,
    uids: Sequence[str] | None = None,
    filter_fn: Callable[[dict[str, Any]], bool] | None = None,
) -> Dataset:
    """Select by uid list and/or a predicate on examples. Raises ValueError if nothing is selected."""
    out = select_uids(ds, uids) if uids is not None else ds
    if filter_fn is not None:
        out = out.filter(filter_fn, desc="filtering examples")
    if len(out) == 0:
        raise ValueError("the selection is empty: no example matched the given uids/filter")
    return out


def resolve_examples(spec: Any, train_dataset: Any = None, split: str | None = None, **load_kwargs: Any) -> Dataset:
    """Resolve a forget/retain specification.

    ``spec`` may be anything :func:`load_examples` takes, or a list of uid strings, which are looked up in
    ``train_dataset`` (required then).
    """
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(x, str) for x in spec):
        if train_dataset is None:
            raise ValueError("a list of uids needs train_dataset= (the dataset the model was trained on)")
        return select_uids(load_examples(train_dataset, split=split), spec)
    if isinstance(spec, (list, tuple)) and len(spec) == 0:
        raise ValueError("the forget/retain set is empty: name at least one example")
    return load_examples(spec, split=split, **load_kwargs)
