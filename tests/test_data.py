"""Data loading from every source, uid handling, label masking, collators, paired batches."""

import json

import pytest
from datasets import Dataset, DatasetDict

from hf_unlearn.data import (
    IGNORE_INDEX,
    PairedCollator,
    PairedDataset,
    collator_for,
    column,
    content_uid,
    encode_examples,
    encode_qa,
    exclude_uids,
    load_examples,
    resolve_examples,
    select_examples,
    select_uids,
    tokenize_any,
    tokenize_qa,
    tokenize_text,
)
from hf_unlearn.models import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tok(qa_texts):
    return train_bpe_tokenizer(qa_texts, vocab_size=400)


def test_missing_uids_are_derived_from_content_deterministically():
    rows = [{"question": "a?", "answer": "b"}, {"question": "c?", "answer": "d"}]
    a, b = load_examples(rows), load_examples(list(rows))
    assert a["uid"] == b["uid"]
    assert a["uid"][0] == content_uid(rows[0]) and a["uid"][0] != a["uid"][1]


def test_int_uids_become_strings():
    ds = load_examples([{"uid": 7, "text": "x"}, {"uid": 8, "text": "y"}])
    assert ds["uid"] == ["7", "8"]


def test_duplicate_uids_are_an_error():
    with pytest.raises(ValueError, match="duplicate uids"):
        load_examples([{"uid": "a", "text": "x"}, {"uid": "a", "text": "y"}])
    with pytest.raises(ValueError, match="duplicate uids"):  # identical content -> identical derived uid
        load_examples([{"text": "x"}, {"text": "x"}])


def test_empty_sources_are_an_error():
    with pytest.raises(ValueError, match="empty"):
        load_examples([])
    with pytest.raises(ValueError, match="empty"):
        load_examples(Dataset.from_dict({"text": []}))


def test_custom_uid_column_is_renamed():
    ds = load_examples([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}], uid_column="id")
    assert ds["uid"] == ["a", "b"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_local_files(tmp_path, qa_rows, fmt):
    ds = Dataset.from_list(qa_rows[:5])
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in qa_rows[:5]))
    elif fmt == "json":
        ds.to_json(str(path))
    elif fmt == "csv":
        ds.to_csv(str(path))
    else:
        ds.to_parquet(str(path))
    loaded = load_examples(str(path))
    assert loaded["uid"] == [r["uid"] for r in qa_rows[:5]]
    assert loaded["answer"] == [r["answer"] for r in qa_rows[:5]]


def test_save_to_disk_folder_and_dataset_dict(tmp_path, qa_rows):
    dd = DatasetDict({"train": Dataset.from_list(qa_rows[:4]), "forget": Dataset.from_list(qa_rows[4:6])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_examples(str(tmp_path / "dd"), split="forget")["uid"] == ["u004", "u005"]
    with pytest.raises(ValueError, match="several splits"):
        load_examples(dd)
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        load_examples(dd, split="nope")


def test_corrupt_saved_folder_is_named(tmp_path, qa_rows):
    Dataset.from_list(qa_rows[:4]).save_to_disk(str(tmp_path / "ds"))
    for f in (tmp_path / "ds").glob("*.arrow"):
        f.unlink()
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        load_examples(str(tmp_path / "ds"))


def test_unreachable_hub_id_names_the_source():
    with pytest.raises(ValueError, match="no-such-user/no-such-dataset"):
        load_examples("no-such-user/no-such-dataset")


def test_unsupported_file_type(tmp_path):
    p = tmp_path / "x.xlsx"
    p.write_text("nope")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_examples(str(p))


def test_select_by_uids_and_filter(qa_rows):
    ds = load_examples(qa_rows)
    assert select_uids(ds, ["u003", "u001"])["uid"] == ["u001", "u003"]
    with pytest.raises(KeyError, match="zzz"):
        select_uids(ds, ["u001", "zzz"])
    assert "u001" not in exclude_uids(ds, ["u001"])["uid"]
    picked = select_examples(ds, filter_fn=lambda ex: ex["uid"].endswith("5"))
    assert picked["uid"] == ["u005", "u015"]
    with pytest.raises(ValueError, match="empty"):
        select_examples(ds, filter_fn=lambda ex: False)
    assert resolve_examples(["u002"], qa_rows)["uid"] == ["u002"]


def test_label_mask_covers_exactly_the_answer(tok):
    enc = encode_qa(tok, "What is the secret code of item 3?", "The code of item 3 is K8R3.")
    labels, ids = enc["labels"], enc["input_ids"]
    answer_ids = tok(" The code of item 3 is K8R3.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(ids) - len(answer_ids)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == answer_ids == ids[n_prompt:]
    assert ids[0] == tok.bos_token_id
    assert tok.decode([t for t in labels if t != IGNORE_INDEX], skip_special_tokens=True).strip() == (
        "The code of item 3 is K8R3."
    )


def test_chat_template_masking(tok):
    enc = encode_qa(tok, "Who?", "Ann.", template="chat")
    n_answer = sum(1 for x in enc["labels"] if x != IGNORE_INDEX)
    assert n_answer == len(tok("Ann.", add_special_tokens=False)["input_ids"]) + 1
    prompt = tok.decode(enc["input_ids"][: len(enc["input_ids"]) - n_answer])
    assert "<|user|>" in prompt and "<|assistant|>" in prompt and "Ann" not in prompt


def test_truncation_keeps_an_answer_token(tok):
    enc = encode_qa(tok, "word " * 50, "answer " * 50, max_length=16)
    assert len(enc["input_ids"]) == 16
    assert sum(1 for x in enc["labels"] if x != IGNORE_INDEX) >= 1


def test_tokenize_qa_missing_column(tok, qa_rows):
    with pytest.raises(KeyError, match="'answer'"):
        tokenize_qa(Dataset.from_list([{"uid": "a", "question": "q"}]), tok)
    out = tokenize_qa(load_examples(qa_rows[:3]), tok)
    assert set(out.column_names) == {"uid", "input_ids", "attention_mask", "labels"}


@pytest.mark.parametrize("kind", ["qa", "text", "pretokenized"])
def test_encode_examples_equals_tokenize_any(tok, qa_rows, kind):
    ds = load_examples(qa_rows[:5])
    if kind == "text":
        ds = load_examples([{"uid": r["uid"], "text": r["question"] + " " + r["answer"]} for r in qa_rows[:5]])
    mapped = tokenize_any(ds, tok, max_length=12)
    if kind == "pretokenized":
        ds = mapped
    rows = encode_examples(ds.select([4, 0, 2]), tok, max_length=12)
    want = mapped.select([4, 0, 2])
    assert [r["uid"] for r in rows] == column(want, "uid")
    for key in ("input_ids", "attention_mask", "labels"):
        assert [r[key] for r in rows] == column(want, key)
    with pytest.raises(KeyError, match="cannot tell how to tokenize"):
        encode_examples(Dataset.from_list([{"uid": "a", "body": "x"}]), tok)


def test_column_reads_through_index_mappings(qa_rows):
    ds = load_examples(qa_rows[:6]).shuffle(seed=1).select([5, 1, 3])
    assert column(ds, "uid") == [ds[i]["uid"] for i in range(3)]


def test_text_tokenization_labels_every_token(tok):
    out = tokenize_text(load_examples([{"text": "The code of item 3"}]), tok)
    assert out[0]["labels"] == out[0]["input_ids"]
    assert tok.decode(out[0]["input_ids"], skip_special_tokens=True).strip() == "The code of item 3"


def test_collator_pads_and_keeps_uids(tok, qa_rows):
    feats = list(tokenize_qa(load_examples(qa_rows[:3]), tok))
    feats[0]["input_ids"] = feats[0]["input_ids"][:5]
    feats[0]["labels"] = feats[0]["labels"][:5]
    feats[0]["attention_mask"] = feats[0]["attention_mask"][:5]
    batch = collator_for(tok)(feats)
    assert batch["uid"] == ["u000", "u001", "u002"]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][0, 5:] == IGNORE_INDEX).all() and (batch["attention_mask"][0, 5:] == 0).all()
    left = collator_for(tok, padding_side="left")(feats)
    assert (left["attention_mask"][0, -5:] == 1).all() and left["attention_mask"][0, 0] == 0


def test_paired_batches_cycle_retain_deterministically(tok, qa_rows):
    f = tokenize_qa(load_examples(qa_rows[:2]), tok)
    r = tokenize_qa(load_examples(qa_rows[2:7]), tok)
    first = PairedDataset(f, r, seed=3)
    seq_a = [first[i % 2]["retain"]["uid"] for i in range(6)]
    ds = PairedDataset(f, r, seed=3)
    seq_b = [ds[i % 2]["retain"]["uid"] for i in range(6)]
    assert seq_a == seq_b and len(set(seq_a[:5])) == 5  # a full pass over the retain set before repeating
    # the partner depends on (item, draw count) only: another access order gives the same pairs
    other = PairedDataset(f, r, seed=3)
    reversed_pairs = [(i, other[i]["retain"]["uid"]) for i in (1, 0, 1, 0)]
    assert sorted(reversed_pairs) == sorted((i % 2, seq_a[i]) for i in range(4))
    batch = PairedCollator(collator_for(tok))([ds[0], ds[1]])
    assert batch["forget"]["uid"] == ["u000", "u001"] and len(batch["retain"]["uid"]) == 2
