"""What the `preprocess` driver holds while it plans a run and cuts its clips: a count per video, a range of
captions, a count per cached video; never a whole captions file, the cache's every part or every skipped input."""

from __future__ import annotations

import functools
import json
import random
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.data import caption_ranges
from vlkd.data.caption_ranges import CaptionRanges, count_captions
from vlkd.data.captions import Caption, dump_captions
from vlkd.data.features import Clip, FeaturesWriter, PartCache
from vlkd.data.skipped import SkippedInputs
from vlkd.data.synth_asr import howto_captions
from vlkd.errors import ChecksumError
from vlkd.inputs import InputSource, open_input
from vlkd.jobs import preprocess
from vlkd.jobs.preprocess import VideoInput, plan_inputs
from vlkd.specs import parse_spec
from vlkd.storage import open_storage

CLIPS_PER_VIDEO = 111
"""HowTo100M's mean"""
PUBLISH_AHEAD = 8


def interleaved(captions: list[Caption], seed: int = 0) -> list[Caption]:
    """Captions as a file may hold them: each video's in time order, but videos' runs cut and interleaved."""
    runs = [captions[i : i + 37] for i in range(0, len(captions), 37)]
    random.Random(seed).shuffle(runs)
    return [c for run in runs for c in run]


@pytest.fixture(scope="module")
def captions() -> list[Caption]:
    return interleaved(howto_captions(seed=3, videos=12, clips_per_video=CLIPS_PER_VIDEO))


def test_captions_come_back_a_video_at_a_time_in_id_order_from_ranges_of_at_most_the_limit(captions, tmp_path):
    lines = dump_captions(captions).splitlines()
    counts = count_captions(lines, lambda *_: pytest.fail("every line is a caption"))
    assert sum(counts.values()) == len(captions) and len(counts) == 12

    ranges = CaptionRanges.spill(lines, counts, tmp_path / "ranges", limit=300)

    assert len(ranges.firsts) == 6  # 111 clips a video, two videos to a range of 300
    assert all(len(f.read_text().splitlines()) <= 300 for f in (tmp_path / "ranges").iterdir())
    videos = list(ranges.videos())
    assert [video_id for video_id, _ in videos] == sorted(counts)
    for video_id, held in videos:  # each video whole, its captions in the order the file gave them
        assert held == [c for c in captions if c.video_id == video_id]


def test_a_video_with_more_captions_than_the_limit_is_a_range_of_its_own(captions, tmp_path):
    lines = dump_captions(captions).splitlines()
    counts = count_captions(lines, lambda *_: None)
    wanted = {video_id: counts[video_id] for video_id in sorted(counts)[:3]}  # only these videos are spilled

    ranges = CaptionRanges.spill(lines, wanted, tmp_path / "ranges", limit=50)

    assert ranges.firsts == tuple(sorted(wanted))
    assert [(video_id, len(held)) for video_id, held in ranges.videos()] == list(wanted.items())


def test_spilling_again_into_the_same_folder_starts_it_afresh(captions, tmp_path):
    lines = dump_captions(captions).splitlines()
    counts = count_captions(lines, lambda *_: None)
    CaptionRanges.spill(lines, counts, tmp_path / "ranges", limit=300)
    again = CaptionRanges.spill(lines, counts, tmp_path / "ranges", limit=300)
    assert sum(len(held) for _, held in again.videos()) == len(captions)


def test_spilled_lines_are_appended_a_buffer_at_a_time(captions, tmp_path, monkeypatch):
    """The buffer, not the file, bounds what is held: with a tiny one every range's file is appended to often."""
    monkeypatch.setattr(caption_ranges, "SPILL_BYTES", 2_000)
    held: list[int] = []
    append = CaptionRanges._append

    def recorded(ranges: CaptionRanges, pending: dict[int, list[str]]) -> None:
        held.append(sum(len(line) for lines in pending.values() for line in lines))
        append(ranges, pending)

    monkeypatch.setattr(CaptionRanges, "_append", recorded)
    lines = dump_captions(captions).splitlines()
    counts = count_captions(lines, lambda *_: None)

    ranges = CaptionRanges.spill(lines, counts, tmp_path / "ranges", limit=300)

    assert len(held) > 10 and max(held) < 2_000 + 1_000  # the buffer and one line past it
    assert sum(len(captions) for _, captions in ranges.videos()) == len(captions)


def test_plan_inputs_counts_reads_and_skips_without_holding_the_captions(captions, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    video_ids = sorted({c.video_id for c in captions})
    for video_id in [*video_ids[1:], "silent"]:  # the first video's file is missing; "silent" has no captions
        (folder / f"{video_id}.mp4").write_bytes(b"not decoded while planning")
    (folder / "captions.jsonl").write_text(
        dump_captions(captions[:500]) + "{not json\n" + dump_captions(captions[500:])
    )
    source = InputSource(open_storage(folder.as_uri()), "", folder.as_uri())
    skipped = SkippedInputs(tmp_path / "skipped.jsonl")

    videos, ranges = plan_inputs(source, "captions.jsonl", tmp_path / "scratch", skipped)

    assert [v.video_id for v in videos] == video_ids[1:]
    assert [video_id for video_id, _ in ranges.videos()] == video_ids[1:]
    first = sum(c.video_id == video_ids[0] for c in captions)
    assert [json.loads(line) for line in skipped.close().read_text().splitlines()] == [
        {"item": "captions.jsonl:501", "reason": "not a caption record (JSONDecodeError: Expecting property name "
         "enclosed in double quotes: line 1 column 2 (char 1))"},
        {"item": video_ids[0], "reason": f"captions name a missing video ({first} clips)"},
        {"item": "silent.mp4", "reason": "no captions"},
    ]  # fmt: skip


def test_skipped_inputs_go_to_the_file_and_only_the_first_are_held(tmp_path):
    skipped = SkippedInputs(tmp_path / "skipped.jsonl")
    for i in range(1_000):
        skipped.add(f"video_{i}@{i}-{i + 1}s", f"past the video's end (its {i % 7} features)")

    lines = skipped.close().read_text().splitlines()

    assert skipped.count == len(lines) == 1_000
    assert skipped.first == [json.loads(line) for line in lines[: SkippedInputs.FIRST]]
    assert skipped.reasons == [f"past the video's end (its {i} features)" for i in range(SkippedInputs.REASONS)]


def test_a_cached_video_is_complete_with_its_end_record_and_every_span_it_names(tmp_path):
    cache = PartCache(open_storage(tmp_path.as_uri()), "cache/preprocess/f")
    span = np.zeros((2, 4), np.float16)
    videos = [
        (3, [0, 1, 2], True),  # complete
        (3, [0, 2], True),  # a span lost
        (2, [0, 1], False),  # still encoding: no end yet
        (0, [], True),  # a video with no whole second
        (2, [0, 1, 2], True),  # and a part past its end, which its spans do not name
        (70, list(range(70)), True),  # more spans than an int64 has bits
        (70, list(range(69)), True),
    ]
    for number, (spans, written, ended) in enumerate(videos):
        for index in written:
            cache.write_span(f"v{number}", "tag", index, span)
        if ended:
            cache.write_end(f"v{number}", "tag", spans, 10.0)

    assert cache.completed() == {("v0", "tag"): 3, ("v3", "tag"): 0, ("v4", "tag"): 2, ("v5", "tag"): 70}


def test_a_caption_file_of_any_size_is_read_as_lines_not_as_one_string(tmp_path, monkeypatch):
    """`plan_inputs` must not read the file whole: a source whose `read_bytes` fails proves it streams."""
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"x")
    (folder / "captions.jsonl").write_text(dump_captions([Caption("a", 0.0, 1.0, "hello")]))
    source = InputSource(open_storage(folder.as_uri()), "", folder.as_uri())
    monkeypatch.setattr(InputSource, "read_bytes", lambda *_: pytest.fail("the captions file was read whole"))

    videos, ranges = plan_inputs(source, "captions.jsonl", tmp_path / "scratch", skipped_in(tmp_path))

    assert [v.video_id for v in videos] == ["a"] and [len(held) for _, held in ranges.videos()] == [1]


def test_paths_of_range_files_stay_inside_the_folder(tmp_path: Path):
    """Video ids are file names in HowTo100M (`nyjLnhdVYdE`), but a range's file is named by its number."""
    lines = dump_captions([Caption("../../etc/x", 0.0, 1.0, "t")]).splitlines()
    ranges = CaptionRanges.spill(lines, {"../../etc/x": 1}, tmp_path / "ranges")
    assert [p.name for p in (tmp_path / "ranges").iterdir()] == ["range-000000.jsonl"]
    assert [video_id for video_id, _ in ranges.videos()] == ["../../etc/x"]


def test_captions_of_an_artifact_are_fetched_checked_and_gone_once_spilled(captions, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for video_id in sorted({c.video_id for c in captions}):
        (folder / f"{video_id}.mp4").write_bytes(b"x")
    (folder / "captions.jsonl").write_text(dump_captions(captions))
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    store.publish("dataset", "videos", collect_files([folder]))
    scratch = tmp_path / "scratch"

    videos, ranges = plan_inputs(open_input("dataset/videos", store), "captions.jsonl", scratch, skipped_in(tmp_path))

    assert len(videos) == 12 and sum(len(held) for _, held in ranges.videos()) == len(captions)
    assert sorted(p.name for p in scratch.iterdir()) == ["caption-ranges"]  # the fetched copy is gone

    stored = next((tmp_path / "store").rglob("captions.jsonl"))
    stored.write_text(stored.read_text().replace("a", "b", 1))  # what the manifest's sha256 no longer matches
    with pytest.raises(ChecksumError, match=r"captions\.jsonl does not match its manifest.s sha256"):
        plan_inputs(open_input("dataset/videos", store), "captions.jsonl", scratch, skipped_in(tmp_path))


def skipped_in(folder: Path) -> SkippedInputs:
    return SkippedInputs(folder / "skipped.jsonl")


def test_the_publish_reads_videos_ahead_and_writes_what_reading_one_at_a_time_writes(tmp_path, monkeypatch):
    dim, spans = 8, 3
    cache = PartCache(open_storage((tmp_path / "store").as_uri()), "cache/p")
    captions = howto_captions(seed=5, videos=24, clips_per_video=6)
    usable = {}
    for number, video_id in enumerate(sorted({c.video_id for c in captions})):
        for span in range(spans):
            cache.write_span(video_id, "t", span, np.full((4, dim), number + span / 10, np.float16))
        cache.write_end(video_id, "t", spans, 12.0)
        usable[video_id] = VideoInput(video_id, f"{video_id}.mp4", "t")
    lines = dump_captions(captions).splitlines()
    ranges = CaptionRanges.spill(lines, count_captions(lines, lambda *_: None), tmp_path / "ranges", limit=20)
    spec = parse_spec(
        {
            "stage": "preprocess",
            "name": "n",
            "videos": "dataset/v",
            "encoder_2d": {"name": "clip-vit-b32", "init": "random"},
            "encoder_3d": {"name": "resnext3d", "init": "random"},
            "span_features": 4,
            "shard_size": 8,
        }
    )
    reading, most, lock = [0], [0], threading.Lock()
    read = PartCache.read

    def counted(self: PartCache, *args: object) -> tuple[np.ndarray, float]:
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        time.sleep(0.01)
        try:
            return read(self, *args)
        finally:
            with lock:
                reading[0] -= 1

    monkeypatch.setattr(PartCache, "read", counted)

    def publish(reads: int) -> dict[str, bytes]:
        monkeypatch.setattr(preprocess, "PUBLISH_READS", reads)
        out = tmp_path / f"out-{reads}"
        out.mkdir()
        skipped = SkippedInputs(tmp_path / f"skipped-{reads}.jsonl")
        put = functools.partial(lambda root, path, local: shutil.copy(local, root / path.replace("/", "-")), out)
        with FeaturesWriter(put, tmp_path, spec.shard_size, (dim // 2, dim // 2), 1.0, 16) as writer:
            inputs = preprocess.Inputs(usable, ranges, skipped)
            preprocess._write_shards(writer, spec, inputs, (cache, cache.completed()))
            writer.close(skipped.close())
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    one_at_a_time = publish(1)
    assert most[0] == 1
    ahead = publish(PUBLISH_AHEAD)
    assert most[0] == PUBLISH_AHEAD
    assert ahead == one_at_a_time  # shards, videos, skipped inputs and index, byte for byte
    assert len([name for name in ahead if name.startswith("shards-")]) > PUBLISH_AHEAD


def test_a_shard_that_fails_to_go_up_fails_the_writer_and_nothing_goes_up_after_it(tmp_path):
    puts: list[str] = []

    def put(path: str, local: Path) -> None:
        time.sleep(0.01)
        if path.endswith("shard-00002.parquet"):
            raise OSError("the store refused shard 2")
        puts.append(path)

    clips = [Clip("v", i, float(i), i + 1.0, "t", np.zeros((2, 8), np.float16)) for i in range(4)]
    with pytest.raises(OSError, match="refused shard 2"), FeaturesWriter(put, tmp_path, 4, (4, 4), 1.0, 16) as writer:
        for number in range(40):
            writer.add_video(f"v{number:02d}", 4.0, 4, clips)
        writer.close()
    settled = list(puts)
    time.sleep(0.1)
    assert puts == settled and "shards/shard-00002.parquet" not in puts and len(puts) < 40
