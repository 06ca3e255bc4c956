"""The teacher's captions are tokenised where Ray Data reads them (`TeacherTask.prepare_rows`) and only padded in the
training process (`TeacherTask.collate`): the batches are what tokenising in the collate gave (issue 34, part 3)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from vlkd.data import text as textdata
from vlkd.data.buckets import TOKENS, padded_length
from vlkd.data.ingest import SplitReader
from vlkd.data.row_groups import ShardTable
from vlkd.data.synth_asr import howto_captions
from vlkd.inputs import InputFile
from vlkd.jobs.teacher import TeacherTask
from vlkd.specs import Resources, parse_spec

FEATURE_DIM = 8
MAX_TEXT_LEN = 40


@pytest.fixture(scope="module")
def captions() -> list[str]:
    """HowTo100M-shaped ASR captions (fillers, no punctuation), some joined into narrations longer than
    `MAX_TEXT_LEN` tokens, and captions whose speech has the tokenizer's special tokens' text in it."""
    asr = [c.text for c in howto_captions(seed=3, videos=2, clips_per_video=30)]
    long = [" ".join(asr[i : i + 6]) for i in range(0, 24, 6)]
    literal = ["so you [SEP] put the [MASK] in", "[CLS] um [PAD] okay [UNK]"]
    return asr + long + literal


@pytest.fixture(scope="module")
def task(captions) -> TeacherTask:
    tokenizer = textdata.train_tokenizer(lambda: captions, 300, 1, True)
    spec = {"stage": "teacher", "name": "t", "features": "features/f", "tokenizer": "tokenizer/t", "model": "tiny"}
    return TeacherTask(parse_spec({**spec, "max_text_len": MAX_TEXT_LEN}), tokenizer, FEATURE_DIM)


def rows_of(texts: list[str]) -> pa.Table:
    rng = np.random.default_rng(0)
    frames = rng.integers(1, 6, len(texts))
    return pa.table(
        {
            "video_id": [f"v{i // 3}" for i in range(len(texts))],
            "text": texts,
            "num_frames": pa.array(frames, pa.int32()),
            "features": [rng.normal(size=n * FEATURE_DIM).astype(np.float16) for n in frames],
        }
    )


def tokenised_in_the_collate(task: TeacherTask, texts: list[str]) -> dict[str, torch.Tensor]:
    """The captions as the collate tokenised them before: the tokenizer's own padding and special-token mask,
    padded on to the bucket's length."""
    encoded = task.tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=MAX_TEXT_LEN,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    longest = encoded["input_ids"].shape[1]
    extra = (0, padded_length(longest, MAX_TEXT_LEN, TOKENS) - longest)
    attention = F.pad(encoded["attention_mask"], extra, value=0)
    special = F.pad(encoded["special_tokens_mask"], extra, value=1)
    return {
        "input_ids": F.pad(encoded["input_ids"], extra, value=task.tokenizer.pad_token_id),
        "attention_mask": attention,
        "special_tokens_mask": special.bool() | ~attention.bool(),
    }


def test_prepared_rows_collate_to_the_tokenizers_own_batch(task, captions):
    batch = task.collate(task.prepare_rows(rows_of(captions)))
    expected = tokenised_in_the_collate(task, captions)
    assert batch["input_ids"].shape[1] == MAX_TEXT_LEN  # the long narrations are truncated, to the cap
    for key, value in expected.items():
        assert batch[key].dtype == value.dtype, key
        assert torch.equal(batch[key], value), key
    # The captions that say "[SEP]" or "[MASK]" keep those words maskable, as the tokenizer's mask has them.
    length = int(batch["attention_mask"][-2].sum())
    assert task.tokenizer.mask_token_id in batch["input_ids"][-2, 1 : length - 1]
    assert not batch["special_tokens_mask"][-2, 1 : length - 1].any()


@pytest.mark.parametrize("size", [1, 5, 16])
def test_short_captions_pad_to_the_bucket_above_the_longest(task, captions, size):
    texts = captions[:size]
    batch = task.collate(task.prepare_rows(rows_of(texts)))
    longest = int(batch["attention_mask"].sum(axis=1).max())
    assert batch["input_ids"].shape == (size, padded_length(longest, MAX_TEXT_LEN, TOKENS))
    assert torch.equal(batch["input_ids"], tokenised_in_the_collate(task, texts)["input_ids"])


def test_the_read_task_hands_on_tokenised_rows_and_the_frames_untouched(task, captions):
    """What a Ray Data read task yields (`SplitReader.reader` over a split's window, with the task's
    `prepare_rows`): every row once, its caption as token ids, its frames as they were read."""
    rows = rows_of(captions).append_column("row", pa.array(range(len(captions))))
    half = -(-rows.num_rows // 2)

    def read(shard: InputFile, groups: list[int]) -> list[pa.Table]:
        return [rows.slice(g * half, half) for g in groups]

    split = SplitReader(ShardTable([InputFile("shard", 0)]), (2,), half, 2 * half, read, Resources(), 4096, 0)
    (item,) = split.items(0)
    batch = {key: [value] for key, value in item.items()}  # a batch of one window, as Ray Data hands it on
    read = pa.concat_tables(split.reader(task.prepare_rows)(batch))
    assert "text" not in read.column_names and read.schema.field("input_ids").type == pa.list_(pa.int32())
    order = read.column("row").to_numpy()
    assert sorted(order) == list(range(len(captions)))
    assert read.column("features").equals(rows.column("features").take(order))
    tokenised = task.tokenizer(captions, truncation=True, max_length=MAX_TEXT_LEN)["input_ids"]
    assert read.column("input_ids").to_pylist() == [tokenised[i] for i in order]
    unprepared = pa.concat_tables(split.reader()(batch))
    assert unprepared.column_names == rows.column_names


def test_what_a_read_task_unpickles_to_tokenise_needs_neither_torch_nor_transformers(task, captions):
    """Ray Data's read workers import what they unpickle: the teacher's `prepare_rows`, pickled as Ray ships it
    (cloudpickle), loads in a fresh interpreter without torch or transformers and tokenises as the tokenizer does."""
    check = (
        "import pickle, sys; prepare, rows, expected = pickle.loads(sys.stdin.buffer.read()); "
        "ids = prepare(rows).column('input_ids').to_pylist(); "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)), ids == expected)"
    )
    expected = task.tokenizer(captions, truncation=True, max_length=MAX_TEXT_LEN)["input_ids"]
    shipped = cloudpickle.dumps((task.prepare_rows, pa.table({"text": captions}), expected))
    done = subprocess.run([sys.executable, "-c", check], input=shipped, capture_output=True, check=True)
    assert done.stdout.decode().split() == ["[]", "True"], done.stderr.decode()[-2000:]
