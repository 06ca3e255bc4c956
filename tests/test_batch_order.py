"""How training draws its batches, on data laid out as the real data is: the paper samples x' and v' at random from
a random minibatch (Sec. 3.2), while HowTo100M stores about 111 clips of a video together and Wikipedia's articles
run to dozens of sequences. Every bound is against what a uniform shuffle of the whole split gives."""

from __future__ import annotations

import json
import shutil
from itertools import groupby
from math import prod
from pathlib import Path

import numpy as np
import pytest

from vlkd.data.order import pass_order, spread, windows

pytestmark = pytest.mark.timeout(600)

VIDEOS, CLIPS = 60, 100
"""the HowTo100M-shaped features: 60 videos of about 100 clips each, 6,000 clips"""
BATCH = 32


def test_a_windows_rows_are_each_read_once_and_a_batch_takes_at_most_one_row_of_a_row_group():
    rng = np.random.default_rng(0)
    sizes = [32] * 64 + [7, 0, 19]
    order = spread(sizes, rng)
    assert sorted(order.tolist()) == list(range(sum(sizes)))
    group = np.repeat(np.arange(len(sizes)), sizes)[order]
    full = np.flatnonzero(np.bincount(group, minlength=len(sizes)) == 32)
    for start in range(0, len(order) - BATCH + 1, BATCH):
        batch = group[start : start + BATCH]
        counts = np.bincount(batch, minlength=len(sizes))[full]
        assert counts.max() <= 1, start  # 64 groups of 32: two rows of one group are about 64 rows apart
    assert not np.array_equal(spread(sizes, np.random.default_rng(1)), order)


def test_each_pass_has_its_own_seeded_order_of_row_groups_cut_into_windows():
    assert np.array_equal(pass_order(1000, 3, 5), pass_order(1000, 3, 5))
    assert not np.array_equal(pass_order(1000, 3, 5), pass_order(1000, 3, 6))
    assert not np.array_equal(pass_order(1000, 3, 5), pass_order(1000, 4, 5))
    order = pass_order(1000, 3, 5)
    cut = windows(order, 64)
    assert [len(w) for w in cut] == [64] * 15 + [40] and np.array_equal(np.concatenate(cut), order)


def _write_features(out: Path, scratch: Path) -> dict[str, int]:
    """A features artifact's files, as preprocessing writes them: each video's clips together in clip order, in
    shards of 256 clips and row groups of 32, from HowTo100M-shaped captions. Returns clips per video."""
    from vlkd.data import features as fmt
    from vlkd.data.synth_asr import howto_captions

    def put(path: str, local: Path) -> None:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local, out / path)

    rng = np.random.default_rng(0)
    writer = fmt.FeaturesWriter(put, scratch, shard_size=256, dims=(4, 4), fps=1.0, max_frames=512)
    counts = {}
    for video_id, captions in groupby(howto_captions(0, VIDEOS, CLIPS), key=lambda c: c.video_id):
        clips = [
            fmt.Clip(video_id, i, c.start, c.end, c.text, rng.normal(size=(2, 8)).astype(np.float16))
            for i, c in enumerate(captions)
        ]
        writer.add_video(video_id, clips[-1].end, 2 * len(clips), clips)
        counts[video_id] = len(clips)
    writer.close()
    return counts


@pytest.fixture(scope="module")
def howto(make_store, ray_session, tmp_path_factory):
    """An S3 store (the moto server) with HowTo100M-shaped features `features/howto` and a tokenizer of their
    captions `tokenizer/howto`; and the clips of each video."""
    from vlkd.artifacts import collect_files
    from vlkd.data import text as textdata
    from vlkd.data.synth_asr import howto_captions

    folder = tmp_path_factory.mktemp("howto")
    store = make_store("s3", folder)
    out, scratch = folder / "features", folder / "scratch"
    out.mkdir()
    scratch.mkdir()
    counts = _write_features(out, scratch)
    store.publish("features", "howto", collect_files([out]), attributes={"random_init": True})
    lines = [c.text for c in howto_captions(0, VIDEOS, CLIPS)]
    tokenizer = textdata.train_tokenizer(lambda: lines, 400, 1, True)
    textdata.save_tokenizer(tokenizer, folder / "tokenizer")
    store.publish("tokenizer", "howto", collect_files([folder / "tokenizer"]))
    return store, counts


def _same_video_share(videos: list[np.ndarray]) -> float:
    """The share of (anchor, other example of its batch) pairs from one video: the expected share of L_CT's
    negatives there, as the teacher draws them uniformly among the batch's other examples."""
    pairs = same = 0
    for batch in videos:
        _, counts = np.unique(batch, return_counts=True)
        same += int((counts * (counts - 1)).sum())
        pairs += len(batch) * (len(batch) - 1)
    return same / pairs


def _uniform(counts: list[int], batch: int) -> tuple[float, float]:
    """(share of same-video pairs, expected videos in a batch) under a uniform shuffle of clips with `counts` per
    video: sum n(n-1) / N(N-1), and the sum over videos of the chance a batch drawn without replacement has one."""
    total = sum(counts)
    share = sum(n * (n - 1) for n in counts) / (total * (total - 1))
    absent = [prod((total - n - i) / (total - i) for i in range(batch)) for n in counts]
    return share, sum(1 - a for a in absent)


def test_the_teachers_batches_take_negatives_from_other_videos_as_often_as_a_uniform_shuffle(howto):
    from vlkd.data.clips import clip_datasets, held_out
    from vlkd.data.ingest import configure_ray_data
    from vlkd.inputs import open_input
    from vlkd.specs import Resources

    store, counts = howto
    resources = Resources(num_workers=0)
    configure_ray_data(resources)
    splits, info = clip_datasets(store, "features/howto", 600, 0, resources, BATCH, 4096)
    held = held_out(open_input("features/howto", store), info, 600, 0).videos
    share, videos = _uniform([n for v, n in counts.items() if v not in held], BATCH)

    def batches(videos: list[str]) -> list[np.ndarray]:
        return [np.array(videos[i : i + BATCH]) for i in range(0, len(videos) - BATCH + 1, BATCH)]

    drawn = [r["video_id"] for r in splits["train"].epoch(0).iter_rows()]
    assert _same_video_share(batches(drawn)) <= 2 * share, (_same_video_share(batches(drawn)), share)
    assert _same_video_share(batches(drawn)) >= share / 2
    assert np.mean([len(set(b)) for b in batches(drawn)]) >= videos / 2
    passes = splits["train"].passes
    assert {v: drawn.count(v) for v in set(drawn)} == {v: passes * n for v, n in counts.items() if v not in held}
    in_order = batches(sorted(drawn))  # each video's clips together, as the shards hold them and training read them
    assert _same_video_share(in_order) > 10 * share  # the data tells the two apart
    again = [r["video_id"] for r in splits["train"].epoch(1).iter_rows()]
    assert sorted(again) == sorted(drawn) and again != drawn  # every clip once a pass, in another order


def _teacher_spec(name: str, **train):
    from vlkd.specs import parse_spec

    budget = {"batch_size": BATCH, "max_steps": 30, "log_every": 5, "eval_every": 10, "checkpoint_every": 10}
    return parse_spec(
        {
            "stage": "teacher",
            "name": name,
            "features": "features/howto",
            "tokenizer": "tokenizer/howto",
            "model": "tiny",
            "max_text_len": 24,
            "max_frames": 4,
            "train": {**budget, "val_size": 600, "patience": None, **train},
            "resources": {"num_workers": 0},
        }
    )


def _logged(store, ref: str, tmp_path: Path) -> list[dict]:
    out = tmp_path / ref.replace("/", "-")
    store.fetch(ref, out)
    return [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]


def test_the_teacher_logs_its_negatives_from_other_videos_near_the_uniform_share(howto, tmp_path):
    """What a user sees on their own data: `same_video_negatives` and `videos_per_batch` in metrics.jsonl (and
    TensorBoard), for training and for the validation batches early stopping watches."""
    from vlkd.data.clips import features_info, held_out
    from vlkd.inputs import open_input
    from vlkd.jobs import teacher
    from vlkd.runtime import JobContext

    store, counts = howto
    (manifest,) = teacher.run(_teacher_spec("howto"), JobContext("howto-teacher", store, tmp_path))
    source = open_input("features/howto", store)
    held = held_out(source, features_info(source), 600, 0).videos
    share, videos = _uniform([n for v, n in counts.items() if v not in held], BATCH)
    logged = _logged(store, str(manifest.ref), tmp_path)
    training = [r for r in logged if "same_video_negatives" in r]
    assert len(training) == 6
    # 6 windows of 320 negatives, about 35 of the anchor's own video at the uniform share: the mean moves with the
    # draws (padding captions to 16-token buckets changed the masks' draws, hence the negatives drawn after them, and
    # it read 0.0089 against a share of 0.0183). A quarter of the share still fails a draw that never picks the
    # anchor's video; twice the share is far below the 26-28% of stored order.
    assert share / 4 <= np.mean([r["same_video_negatives"] for r in training]) <= 2 * share
    assert np.mean([r["videos_per_batch"] for r in training]) >= videos / 2
    validation = [r for r in logged if "val_same_video_negatives" in r]
    held_share, _ = _uniform([counts[v] for v in held], BATCH)
    assert validation and all(r["val_same_video_negatives"] <= 2 * held_share for r in validation)
    assert manifest.metrics["val_same_video_negatives"] <= 2 * held_share


def test_a_resumed_teacher_logs_the_losses_of_an_uninterrupted_run(howto, tmp_path, monkeypatch):
    from vlkd.jobs import teacher
    from vlkd.runtime import JobContext
    from vlkd.train_loop import Loop

    store, _ = howto
    (whole,) = teacher.run(_teacher_spec("whole"), JobContext("whole", store, tmp_path / "whole"))
    original = Loop._micro_step

    def crash(self, batch, window):
        if self.state.step == 17:
            raise RuntimeError("preempted")
        original(self, batch, window)

    context = JobContext("resumed", store, tmp_path / "resumed")
    with monkeypatch.context() as patch:
        patch.setattr(Loop, "_micro_step", crash)
        with pytest.raises(RuntimeError, match="preempted"):
            teacher.run(_teacher_spec("resumed"), context)
    (resumed,) = teacher.run(_teacher_spec("resumed"), context)
    assert resumed.metrics["resumed_from"] == [10]
    keys = ("step", "loss", "ct", "mlm", "same_video_negatives", "videos_per_batch")
    expected = [{k: r[k] for k in keys} for r in _logged(store, str(whole.ref), tmp_path) if "ct" in r]
    got = [{k: r[k] for k in keys} for r in _logged(store, str(resumed.ref), tmp_path) if "ct" in r]
    assert [r["step"] for r in got] == [r["step"] for r in expected] == [5, 10, 15, 20, 25, 30]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-4), mine["step"]


def test_two_workers_share_an_epoch_between_them_whole_windows_or_every_other_row(howto):
    """A paper-sized split deals whole windows (each read once), a small one every other row of each window (each
    worker still gets half); either way every clip of the epoch goes to exactly one worker."""
    from vlkd.data.clips import clip_datasets
    from vlkd.data.ingest import WHOLE_WINDOWS, configure_ray_data
    from vlkd.specs import Resources

    store, _ = howto
    resources = Resources(num_workers=2)
    configure_ray_data(resources)
    for window, whole in ((4096, False), (256, True)):
        splits, _ = clip_datasets(store, "features/howto", 600, 0, resources, BATCH, window)
        train = splits["train"]
        items = train.passes * -(-sum(train.groups) // train.per_window)
        assert (items >= WHOLE_WINDOWS * 2) is whole
        every = sorted(bytes(r["features"]) for r in train.epoch(0).iter_rows())
        shares = [[bytes(r["features"]) for r in train.epoch(0, rank, 2).iter_rows()] for rank in (0, 1)]
        assert sorted(shares[0] + shares[1]) == every
        assert abs(len(shares[0]) - len(shares[1])) <= (2 * window if whole else 1)


@pytest.fixture(scope="module")
def wiki(make_store, ray_session, tmp_path_factory):
    """An S3 store with a corpus of 40 Wikipedia-length articles (about 4,000 tokens each), made by the text stage's
    own steps, and the article of each stored training sequence."""
    from vlkd.artifacts import collect_files
    from vlkd.data import text as textdata
    from vlkd.data.synth import articles_in, long_articles

    folder = tmp_path_factory.mktemp("wiki")
    store = make_store("s3", folder)
    lines = list(textdata.corpus_lines(long_articles(0, 40)))
    tokenizer = textdata.train_tokenizer(lambda: lines, 600, 1, True)
    ids = textdata.tokenize_lines(tokenizer.backend_tokenizer, lines)
    sequences = textdata.pack_sequences(ids, 128, tokenizer.cls_token_id, tokenizer.sep_token_id, True)
    textdata.write_shards(sequences, folder / "corpus", 100_000, 64, 0, 128)
    textdata.save_tokenizer(tokenizer, folder / "tokenizer")
    store.publish("corpus", "wiki", collect_files([folder / "corpus"]))
    article, current = {}, 0
    for sequence in textdata.read_shards(folder / "corpus", "train"):  # stored order: a tail names no article
        named = articles_in(tokenizer.decode(sequence, skip_special_tokens=True))
        current = named[0] if named else current
        article[tuple(sequence)] = current
    return store, article


def test_the_students_batches_mix_as_many_articles_as_a_uniform_shuffle(wiki):
    from vlkd.data.corpus import corpus_datasets
    from vlkd.data.ingest import configure_ray_data
    from vlkd.specs import Resources

    store, article = wiki
    resources = Resources(num_workers=0)
    configure_ray_data(resources)
    splits, _ = corpus_datasets(store, "corpus/wiki", resources, BATCH, 4096, 0)
    assert sum(splits["train"].groups) > 1  # more than one row group to draw from
    rows = splits["train"].epoch(0).iter_batches(batch_size=BATCH, batch_format="pyarrow", drop_last=True)
    drawn = [[article[tuple(s)] for s in b.column("input_ids").to_pylist()] for b in rows]
    _, uniform = _uniform(list(np.unique(list(article.values()), return_counts=True)[1]), BATCH)
    assert np.mean([len(set(b)) for b in drawn]) >= uniform / 2, uniform
    stored = list(article.values())  # in the order the shards hold them: what training read before
    in_order = [stored[i : i + BATCH] for i in range(0, len(stored) - BATCH + 1, BATCH)]
    assert np.mean([len(set(b)) for b in in_order]) < uniform / 4  # the corpus tells the two apart


def test_a_corpus_written_before_row_groups_were_recorded_is_read_a_shard_at_a_time(wiki, tmp_path):
    """Such a corpus holds each shard in one row group and says nothing of it in index.json: it is still read whole,
    each sequence once a pass."""
    import pyarrow.parquet as pq

    from vlkd.artifacts import collect_files
    from vlkd.data.corpus import corpus_datasets
    from vlkd.data.ingest import configure_ray_data
    from vlkd.data.text import INDEX, read_shards
    from vlkd.specs import Resources

    store, _ = wiki
    folder = tmp_path / "old"
    store.fetch("corpus/wiki", folder)
    index = json.loads((folder / INDEX).read_text())
    del index["row_group_size"]
    (folder / INDEX).write_text(json.dumps(index))
    for split in index["splits"].values():
        for shard in split["shards"]:
            pq.write_table(pq.read_table(folder / shard["path"]), folder / shard["path"])  # pyarrow's default groups
            assert pq.ParquetFile(folder / shard["path"]).num_row_groups == 1
    store.publish("corpus", "old", collect_files([folder]))
    resources = Resources(num_workers=0)
    configure_ray_data(resources)
    splits, info = corpus_datasets(store, "corpus/old", resources, BATCH, 4096, 0)
    assert info.group_rows == index["shard_size"] and splits["train"].groups == (1,)
    stored = [tuple(s) for s in read_shards(folder, "train")]
    rows = sorted(tuple(r["input_ids"]) for r in splits["train"].epoch(0).iter_rows())
    assert rows == sorted(stored * splits["train"].passes)


def test_a_read_task_carries_no_listing_and_each_window_names_its_own_shards(howto, wiki):
    """Ray Data rebuilds a read task's function in every task, so what it pickles to must not grow with the split: a
    paper-sized features artifact has 530k shards, whose listing took each task 1.4 s to load. The function names no
    shard; each window names its shards with their stored sizes, and a pass names every row group once."""
    import cloudpickle

    from vlkd.data.clips import clip_datasets
    from vlkd.data.corpus import corpus_datasets
    from vlkd.specs import Resources

    resources = Resources(num_workers=2)
    opened = [
        (
            "features/howto",
            howto[0],
            lambda store: clip_datasets(store, "features/howto", 600, 0, resources, BATCH, 256),
        ),
        ("corpus/wiki", wiki[0], lambda store: corpus_datasets(store, "corpus/wiki", resources, BATCH, 256, 0)),
    ]
    for ref, store, open_splits in opened:
        listing = {f.path: f.size for f in store.manifest(ref).files}
        splits, _ = open_splits(store)
        for split in splits.values():
            blob = cloudpickle.dumps(split.reader())
            assert [path for path in listing if path.encode() in blob] == []
            named = [
                (item["paths"][shard], item["sizes"][shard], group)
                for item in split.items(0)
                for shard, group in zip(item["shard"], item["group"], strict=True)
            ]
            every = [
                (shard.path, listing[shard.path], group)
                for shard, groups in zip(split.shards, split.groups, strict=True)
                for group in range(groups)
            ]
            assert sorted(named) == sorted(every * split.passes), ref
        assert sum(splits["train"].groups) > 1, ref
    assert len(clip_datasets(howto[0], "features/howto", 600, 0, resources, BATCH, 256)[0]["train"].shards) > 1


def test_a_splits_shards_are_held_as_arrays_and_read_back_as_listed():
    """A split reaches every training worker pickled with all its shards (530k at HowTo100M's scale): as a
    `ShardTable` its pickle holds no object per shard, and each shard reads back as it was listed."""
    import pickle

    from vlkd.data.row_groups import ShardTable
    from vlkd.inputs import InputFile

    files = [InputFile(f"shards/shard-{i:05d}-é.parquet", 6_000_000 + i * 7) for i in range(3_000)]
    table = pickle.loads(pickle.dumps(ShardTable(files)))

    assert list(table) == files and len(table) == 3_000
    assert table[0] == files[0] and table[-1] == files[-1] and table[1234] == files[1234]
    with pytest.raises(IndexError):
        table[3_000]
    assert held_by(pickle.dumps(table)) < held_by(pickle.dumps(tuple(files))) / 3
    chosen = np.array([0, 7, 2_999, 7])
    assert table.paths_and_sizes(chosen) == ([files[i].path for i in chosen], [files[i].size for i in chosen])
    assert list(ShardTable([])) == []


def held_by(pickled: bytes) -> int:
    """Bytes Python allocates to load `pickled`, and still holds."""
    import pickle
    import tracemalloc

    tracemalloc.start()
    try:
        loaded = pickle.loads(pickled)
        return tracemalloc.get_traced_memory()[0] if loaded is not None else 0
    finally:
        tracemalloc.stop()


def test_a_split_knows_the_rows_a_pass_reads_and_which_worker_would_get_no_whole_batch(howto, wiki):
    """What the driver checks before any training worker starts (`SplitReader.short_share`): the rows it counts are
    the rows a pass reads, held-out clips filtered out of the teacher's training split."""
    from vlkd.data.clips import clip_datasets
    from vlkd.data.corpus import corpus_datasets
    from vlkd.specs import Resources

    resources = Resources(num_workers=2)
    clips, _ = clip_datasets(howto[0], "features/howto", 600, 0, resources, BATCH, 256)
    corpus, _ = corpus_datasets(wiki[0], "corpus/wiki", resources, BATCH, 256, 0)
    for split in [*clips.values(), *corpus.values()]:
        read = split.reader()
        items = split.items(0, 0, 1)
        tables = [t for item in items for t in read({key: [value] for key, value in item.items()})]
        assert sum(t.num_rows for t in tables) == split.rows * split.passes

    train = clips["train"]
    rows = train.rows
    assert train.short_share(rows, 1) is None and train.short_share((rows + 1) // 2, 2) is None
    assert train.short_share(rows + 1, 1) == (
        f"the training split has {rows} rows, fewer than train.batch_size {rows + 1}: lower train.batch_size"
    )
    assert train.short_share(rows // 3 + 1, 3) == (
        f"worker {rows % 3}'s shard has {rows // 3} rows, fewer than train.batch_size {rows // 3 + 1}: "
        "lower resources.num_workers or train.batch_size"
    )
