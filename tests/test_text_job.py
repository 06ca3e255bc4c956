"""The `text` stage on a real local Ray: corpus -> tokenizer + token shards, published with lineage."""

from __future__ import annotations

import pytest
from transformers import BertTokenizerFast

from vlkd.artifacts import collect_files
from vlkd.data.captions import dump_captions
from vlkd.data.synth import CAPTIONS_FILE, TEXT_DIR
from vlkd.data.synth_asr import HowToVideo, howto_videos
from vlkd.data.text import read_shards
from vlkd.errors import DataError, SpecError
from vlkd.jobs import text as text_job
from vlkd.specs import parse_spec

pytestmark = pytest.mark.timeout(300)


def text_spec(**overrides):
    spec = {
        "stage": "text",
        "name": "synth",
        "corpus": "dataset/synth-text",
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "max_len": 24,
        "val_size": 20,
        "shard_size": 200,
    }
    return parse_spec({**spec, **overrides})


@pytest.fixture
def corpus_dataset(store, synth_root):
    return store.publish("dataset", "synth-text", collect_files([synth_root / TEXT_DIR])).ref


def test_text_stage_publishes_a_loadable_tokenizer_and_token_shards(
    ray_session, store, job_context, corpus_dataset, tmp_path
):
    tokenizer_manifest, corpus_manifest = text_job.run(text_spec(), job_context)

    assert str(tokenizer_manifest.ref) == "tokenizer/synth:v1"
    assert tokenizer_manifest.parents == [str(corpus_dataset)]
    store.fetch(tokenizer_manifest.ref, tmp_path / "tok")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path / "tok", local_files_only=True)
    sentence = "a red circle moves to the left"
    ids = tokenizer(sentence)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence

    assert corpus_manifest.parents == [str(corpus_dataset), str(tokenizer_manifest.ref)]
    assert corpus_manifest.metrics["validation_sequences"] == 20
    store.fetch(corpus_manifest.ref, tmp_path / "corpus")
    train = list(read_shards(tmp_path / "corpus", "train"))
    assert len(train) == corpus_manifest.metrics["train_sequences"] > 100
    assert all(len(s) <= 24 and s[0] == tokenizer.cls_token_id and s[-1] == tokenizer.sep_token_id for s in train)
    assert (
        sum(len(s) for s in train) + sum(len(s) for s in read_shards(tmp_path / "corpus", "validation"))
        == corpus_manifest.metrics["tokens"]
    )
    assert len([f for f in corpus_manifest.files if f.path.startswith("train/")]) == -(-len(train) // 200)


def test_text_stage_reuses_a_given_vocab_and_a_tokenizer_artifact(
    ray_session, store, job_context, corpus_dataset, tmp_path
):
    first, _ = text_job.run(text_spec(), job_context)
    store.fetch(first.ref, tmp_path / "tok")
    vocab = store.publish("weights", "synth-vocab", collect_files([tmp_path / "tok" / "vocab.txt"])).ref

    from_vocab, corpus_a = text_job.run(text_spec(name="from-vocab", tokenizer={"vocab": str(vocab)}), job_context)
    assert from_vocab.parents == [str(corpus_dataset), str(vocab)]
    from_artifact, corpus_b = text_job.run(
        text_spec(name="reused", tokenizer={"artifact": "tokenizer/synth:v1"}), job_context
    )
    assert from_artifact.parents == [str(corpus_dataset), str(first.ref)]
    # the same vocabulary tokenises the same corpus into the same shards
    assert {f.sha256 for f in corpus_a.files} == {f.sha256 for f in corpus_b.files}


def test_a_hold_out_larger_than_the_corpus_is_a_clear_error(ray_session, job_context, corpus_dataset):
    with pytest.raises(DataError, match="val_size"):
        text_job.run(text_spec(val_size=10**6), job_context)


def test_tokenizing_tasks_carry_no_listing_and_check_each_file_against_the_sha256_their_row_names(
    ray_session, store, corpus_dataset, tmp_path
):
    """Ray Data rebuilds a task's function in every task, so the source it carries holds no listing of the corpus's
    files (one per file: a corpus of many files made every task, one a file, grow with them); each row names its
    file's sha256, and a stored copy that differs fails the task, naming the file."""
    import cloudpickle

    from vlkd.data import text as textdata
    from vlkd.data.ingest import shard_dataset
    from vlkd.errors import ChecksumError
    from vlkd.inputs import open_input
    from vlkd.specs import Resources

    source = open_input(str(corpus_dataset), store)
    files = text_job.corpus_files(source, "lines", "")
    tokenizer = textdata.train_tokenizer(lambda: ["a red circle moves to the left"] * 4, 100, 1, True)
    textdata.save_tokenizer(tokenizer, tmp_path / "tok")
    task = text_job.tokenizing_task(source, "lines", tmp_path / "tok")
    shipped = cloudpickle.dumps(task)
    assert [f.path for f in files if f.path.encode() in shipped] == [] and all(f.sha256 for f in files)
    assert shard_dataset(files, task, Resources()).count() > 0
    store.storage.write_bytes(f"{source.prefix}/{files[-1].path}", b"a red circle\n")
    with pytest.raises(ChecksumError, match=rf"{files[-1].path} does not match its manifest's sha256"):
        shard_dataset(files, task, Resources()).count()


@pytest.fixture
def howto_dataset(store, tmp_path) -> tuple[str, list[HowToVideo]]:
    """A videos folder shaped like HowTo100M's: many overlapping, noisy ASR captions per video in one captions.jsonl,
    each video's lines together but last-first (time order is the stage's to restore), beside a video file that is
    no text."""
    videos = howto_videos(seed=0, videos=3, clips_per_video=20)
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "howto_0000.mp4").write_bytes(bytes(range(256)))
    (folder / CAPTIONS_FILE).write_text(dump_captions(c for video in videos for c in reversed(video.captions)))
    return str(store.publish("dataset", "howto-videos", collect_files([folder])).ref), videos


def test_a_captions_corpus_is_each_videos_captions_in_time_order_in_the_vocabulary_of_another_corpus(
    ray_session, store, job_context, corpus_dataset, howto_dataset, tmp_path
):
    wiki_tokenizer, _ = text_job.run(text_spec(), job_context)
    videos_ref, videos = howto_dataset
    spec = text_spec(
        name="howto-captions",
        corpus=videos_ref,
        format="captions",
        tokenizer={"artifact": str(wiki_tokenizer.ref)},
        max_len=1024,
        pack=False,  # a sequence per paragraph, so the test sees where paragraphs end
        val_size=0,
    )
    tokenizer_manifest, corpus_manifest = text_job.run(spec, job_context)

    assert tokenizer_manifest.parents == [videos_ref, str(wiki_tokenizer.ref)]
    vocab = {f.path: f.sha256 for f in wiki_tokenizer.files}["vocab.txt"]
    assert {f.path: f.sha256 for f in tokenizer_manifest.files}["vocab.txt"] == vocab
    assert corpus_manifest.metrics["files"] == 1  # the captions file, not the video
    store.fetch(wiki_tokenizer.ref, tmp_path / "tok")
    tokenizer = BertTokenizerFast.from_pretrained(tmp_path / "tok", local_files_only=True)
    store.fetch(corpus_manifest.ref, tmp_path / "corpus")
    expected = [tokenizer(" ".join(c.text for c in video.captions))["input_ids"] for video in videos]
    assert list(read_shards(tmp_path / "corpus", "train")) == expected


def test_a_captions_corpus_without_its_captions_file_says_which_path_and_what_to_set(job_context, corpus_dataset):
    spec = text_spec(corpus=str(corpus_dataset), format="captions")
    with pytest.raises(DataError, match=r"dataset/synth-text:v1/captions.jsonl not found: .* set `captions:`"):
        text_job.run(spec, job_context)


def test_a_captions_file_named_without_format_captions_is_a_spec_error():
    with pytest.raises(SpecError, match="captions: is read only with format: captions"):
        text_spec(corpus="s3://bucket/howto100m/videos", captions="asr.jsonl")
