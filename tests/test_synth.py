"""The synthetic dataset: real mp4s whose pixels match their captions, a Wiki103-layout corpus, task files that
parse in their official formats, all reproducible from a seed; plus the bad inputs preprocessing must skip. The
howto100m-wiki103 profile: minutes-long videos of ~100 overlapping ASR-like clips, Wikipedia-length articles."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import get_args

import av
import numpy as np
import pytest

from vlkd.data.captions import Caption, parse_captions
from vlkd.data.synth import (
    CAPTIONS_FILE,
    CORPUS_FILE,
    TASKS,
    SynthConfig,
    SynthSummary,
    article_name,
    articles_in,
    corrupt_video,
    describe,
    generate,
    long_articles,
    plan_videos,
    truncate_video,
    write_audio_only,
)
from vlkd.data.synth_asr import FILLERS, howto_captions, howto_videos
from vlkd.data.synth_video import _shape_mask, draw_frame
from vlkd.data.synth_world import BACKGROUNDS, COLOURS, MOTION_PHRASES, MOTIONS, SHAPES, SIZE, Actor, position
from vlkd.errors import VlkdError
from vlkd.specs.evaluate import TaskName

SMALL = SynthConfig(
    num_videos=4,
    min_seconds=2.0,
    max_seconds=4.0,
    corpus_paragraphs=60,
    task_train_examples=40,
    task_dev_examples=20,
)
PHRASE_TO_MOTION = {phrase: motion for motion, phrase in MOTION_PHRASES.items()}
HOWTO = SynthConfig(
    num_videos=2,
    profile="howto100m-wiki103",
    articles=3,
    words_per_article=2000,
    task_train_examples=40,
    task_dev_examples=20,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "seed0", SMALL)


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "seed0-again", SMALL)


@pytest.fixture(scope="module")
def howto(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "howto", HOWTO)


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate(tmp_path_factory.mktemp("synth") / "seed1", replace(SMALL, seed=1))


def captions_of(summary: SynthSummary) -> list[Caption]:
    captions, problems = parse_captions((summary.videos_dir / CAPTIONS_FILE).read_text().splitlines())
    assert problems == []
    return captions


@dataclass(frozen=True)
class VideoStreamInfo:
    """What a test reads of a video's stream, read while its container is open (PyAV 18.1.1 refuses after)."""

    codec: str
    pix_fmt: str
    average_rate: Fraction
    seconds: float


def decode(path: Path) -> tuple[VideoStreamInfo, list[np.ndarray]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        context = stream.codec_context
        seconds = float(stream.duration * stream.time_base)
        return VideoStreamInfo(context.name, context.pix_fmt, stream.average_rate, seconds), frames


def actors_named(text: str) -> list[tuple[str, str, str]]:
    """(colour, shape, motion) per clause of a caption such as `a red circle moves up and an orange ...`."""
    named = []
    for clause in text.split(" and "):
        _, colour, shape, phrase = clause.split(" ", 3)
        named.append((colour, shape, PHRASE_TO_MOTION[phrase]))
    return named


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    """Pixels within 40 per channel of the colour: H.264 at crf 18 keeps flat shapes far closer than that."""
    return np.abs(frame.astype(int) - COLOURS[colour]).max(axis=-1) <= 40


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_tsv(path: Path) -> list[list[str]]:
    """As GLUE's official processors read it: tab-separated, no quoting."""
    with path.open(newline="") as f:
        return list(csv.reader(f, delimiter="\t", quotechar=None))


def test_videos_decode_at_the_configured_rate_size_and_length(dataset: SynthSummary) -> None:
    ends = {c.video_id: c.end for c in captions_of(dataset)}
    videos = sorted(dataset.videos_dir.glob("*.mp4"))
    assert len(videos) == dataset.videos == SMALL.num_videos
    for path in videos:
        stream, frames = decode(path)
        assert stream.codec == "h264" and stream.pix_fmt == "yuv420p"
        assert stream.average_rate == SMALL.fps
        assert frames[0].shape == (SMALL.height, SMALL.width, 3)
        assert SMALL.min_seconds - 0.5 / SMALL.fps <= len(frames) / SMALL.fps <= SMALL.max_seconds + 0.5 / SMALL.fps
        assert len(frames) == round(ends[path.stem] * SMALL.fps)
        assert stream.seconds == pytest.approx(ends[path.stem])


def test_captions_tile_each_video_with_one_to_three_segments(dataset: SynthSummary) -> None:
    captions = captions_of(dataset)
    assert len(captions) == dataset.segments
    stems = {p.stem for p in dataset.videos_dir.glob("*.mp4")}
    assert {c.video_id for c in captions} == stems
    total = 0.0
    for stem in stems:
        segments = [c for c in captions if c.video_id == stem]
        assert 1 <= len(segments) <= SMALL.max_segments
        assert segments[0].start == 0.0
        assert all(a.end == b.start for a, b in itertools.pairwise(segments))
        assert all(c.end - c.start >= SMALL.min_segment_seconds - 1e-9 for c in segments)
        total += segments[-1].end
    assert total == pytest.approx(dataset.video_seconds)


def test_each_segment_shows_exactly_the_colours_its_caption_names(dataset: SynthSummary) -> None:
    for stem, captions in _by_video(captions_of(dataset)).items():
        _, frames = decode(dataset.videos_dir / f"{stem}.mp4")
        for caption in captions:
            named = {colour for colour, _, _ in actors_named(caption.text)}
            for index in (round(caption.start * SMALL.fps), round((caption.start + caption.end) / 2 * SMALL.fps)):
                for colour in COLOURS:
                    pixels = int(colour_mask(frames[index], colour).sum())
                    assert (pixels >= 50) if colour in named else (pixels <= 10), (caption, index, colour, pixels)


def test_each_shape_moves_the_way_its_caption_says(dataset: SynthSummary) -> None:
    for stem, captions in _by_video(captions_of(dataset)).items():
        _, frames = decode(dataset.videos_dir / f"{stem}.mp4")
        for caption in captions:
            first, last = round(caption.start * SMALL.fps), round(caption.end * SMALL.fps) - 1
            for colour, _, motion in actors_named(caption.text):
                start, end = (np.argwhere(colour_mask(frames[i], colour)).mean(axis=0) for i in (first, last))
                dy, dx = end - start
                expected_x, expected_y = MOTIONS[motion]
                for moved, direction in ((dx, expected_x), (dy, expected_y)):
                    assert (moved * direction > 10) if direction else (abs(moved) < 3), (caption, colour, dx, dy)


def test_a_frame_colours_exactly_the_pixels_inside_each_shape_also_near_and_past_the_edges() -> None:
    """Shapes are drawn within their bounding boxes; the frame is the one whole-frame masks make, whatever the
    frame size and wherever the shapes are (partly or wholly outside the frame included)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        width, height = (int(v) for v in rng.choice([(32, 32), (128, 96), (34, 90)]))
        actors = tuple(
            Actor(str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(MOTIONS))),
                  float(rng.uniform(-0.3, 1.3)), float(rng.uniform(-0.3, 1.3)))
            for _ in range(int(rng.integers(1, 4)))
        )  # fmt: skip
        progress, background = float(rng.random()), str(rng.choice(list(BACKGROUNDS)))
        expected = np.empty((height, width, 3), np.uint8)
        expected[:] = BACKGROUNDS[background]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for actor in actors:
            x, y = position(actor, progress)
            inside = _shape_mask(actor.shape, xx, yy, x * width, y * height, SIZE * min(width, height))
            expected[inside] = COLOURS[actor.colour]
        assert (draw_frame(background, actors, progress, width, height) == expected).all(), actors


def test_describe_rebuilds_every_caption_from_the_plans(dataset: SynthSummary) -> None:
    rebuilt = [(p.video_id, s.start, s.end, describe(s)) for p in plan_videos(SMALL) for s in p.segments]
    assert rebuilt == [(c.video_id, c.start, c.end, c.text) for c in captions_of(dataset)]


def test_same_seed_writes_identical_files_and_frames(dataset: SynthSummary, twin: SynthSummary) -> None:
    assert all_files(dataset.root) == all_files(twin.root)
    video = sorted(dataset.videos_dir.glob("*.mp4"))[0]
    frames, again = decode(video)[1], decode(twin.videos_dir / video.name)[1]
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


def test_another_seed_changes_videos_captions_corpus_and_every_task(
    dataset: SynthSummary, other_seed: SynthSummary
) -> None:
    ours, theirs = all_files(dataset.root), all_files(other_seed.root)
    assert ours.keys() == theirs.keys()
    changed = {name for name in ours if ours[name] != theirs[name]}
    assert f"videos/{CAPTIONS_FILE}" in changed and f"text/{CORPUS_FILE}" in changed
    assert any(name.endswith(".mp4") for name in changed)
    assert {name.split("/")[1] for name in changed if name.startswith("tasks/")} == set(TASKS)


def test_corpus_has_wiki103_layout_and_the_videos_words(dataset: SynthSummary) -> None:
    text = (dataset.text_dir / CORPUS_FILE).read_text()
    lines = text.split("\n")[:-1]
    assert len(lines) == dataset.corpus_lines and text.endswith(" \n")
    assert lines[0] == " " and lines[1].startswith(" = ") and lines[1].endswith(" = ")
    assert all(line == " " or (line.startswith(" ") and line.endswith(" ")) for line in lines)
    assert all(line == " " for line in lines[::2]), "content lines alternate with blank lines"
    headings = [line for line in lines if re.fullmatch(r" (= )+[^=]+( =)+ ", line)]
    assert any(h.startswith(" = = ") for h in headings) and any(not h.startswith(" = = ") for h in headings)
    paragraphs = [line for line in lines[1::2] if line not in headings]
    assert len(paragraphs) == SMALL.corpus_paragraphs
    words = Counter(text.split())
    assert all(words[w] > 0 for w in [*COLOURS, *SHAPES, "moves", "left", "right", "up", "down"])


def test_task_folders_are_the_tasks_the_eval_spec_knows(dataset: SynthSummary) -> None:
    assert set(TASKS) == set(get_args(TaskName))
    assert sorted(p.name for p in dataset.tasks_dir.iterdir()) == sorted(TASKS)
    assert set(dataset.task_examples) == set(TASKS)


GLUE_FILES = [
    ("sst2", "train.tsv", ["sentence", "label"], {"0", "1"}),
    ("sst2", "dev.tsv", ["sentence", "label"], {"0", "1"}),
    ("qnli", "train.tsv", ["index", "question", "sentence", "label"], {"entailment", "not_entailment"}),
    ("qnli", "dev.tsv", ["index", "question", "sentence", "label"], {"entailment", "not_entailment"}),
    ("qqp", "train.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], {"0", "1"}),
    ("qqp", "dev.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], {"0", "1"}),
]
MNLI_COLUMNS = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse"]
MNLI_COLUMNS += ["sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
NLI_LABELS = {"entailment", "neutral", "contradiction"}
SWAG_COLUMNS = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source"]
SWAG_COLUMNS += ["ending0", "ending1", "ending2", "ending3", "label"]


@pytest.mark.parametrize(("task", "name", "header", "labels"), GLUE_FILES)
def test_glue_files_have_the_official_columns_and_balanced_labels(
    dataset: SynthSummary, task: str, name: str, header: list[str], labels: set[str]
) -> None:
    rows = read_tsv(dataset.tasks_dir / task / name)
    assert rows[0] == header
    assert all(len(row) == len(header) for row in rows[1:])
    assert len(rows) - 1 == dataset.task_examples[task][name]
    counts = Counter(row[-1] for row in rows[1:])
    assert set(counts) == labels and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize(
    ("name", "votes"), [("train.tsv", ["label1"]), ("dev_matched.tsv", [f"label{i}" for i in range(1, 6)])]
)
def test_mnli_files_have_the_official_columns(dataset: SynthSummary, name: str, votes: list[str]) -> None:
    rows = read_tsv(dataset.tasks_dir / "mnli" / name)
    assert rows[0] == [*MNLI_COLUMNS, *votes, "gold_label"]
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert {r["gold_label"] for r in records} == NLI_LABELS
    assert all(r["pairID"] == r["promptID"] + r["gold_label"][0] for r in records)
    assert all(r["sentence1_parse"].startswith("(ROOT ") for r in records)


def test_mnli_mismatched_dev_uses_other_genres(dataset: SynthSummary) -> None:
    def genres(name: str) -> set[str]:
        return {row[3] for row in read_tsv(dataset.tasks_dir / "mnli" / name)[1:]}

    assert genres("dev_mismatched.tsv").isdisjoint(genres("train.tsv") | genres("dev_matched.tsv"))


def test_glue_diagnostic_has_the_category_columns(dataset: SynthSummary) -> None:
    rows = read_tsv(dataset.tasks_dir / "glue_diagnostic" / "diagnostic-full.tsv")
    assert rows[0] == [
        "Lexical Semantics",
        "Predicate-Argument Structure",
        "Logic",
        "Knowledge",
        "Domain",
        "Premise",
        "Hypothesis",
        "Label",
    ]
    assert len(rows) - 1 == SMALL.task_dev_examples
    for asked, reversed_ in zip(rows[1::2], rows[2::2], strict=True):  # each pair both ways, one after the other
        assert (reversed_[5], reversed_[6]) == (asked[6], asked[5]) and reversed_[:5] == asked[:5]
    for row in rows[1:]:
        assert sum(bool(cell) for cell in row[:4]) == 1 and row[4] and row[5] and row[6]
        assert row[7] in NLI_LABELS
    assert {row[3] for row in rows[1:]} >= {"Common sense", "World knowledge"}


@pytest.mark.parametrize(("task", "version"), [("squad_v1", "1.1"), ("squad_v2", "v2.0")])
def test_squad_files_have_the_official_structure_and_spans(dataset: SynthSummary, task: str, version: str) -> None:
    for split, expected in (("train", SMALL.task_train_examples), ("dev", SMALL.task_dev_examples)):
        name = f"{split}-v{version.lstrip('v')}.json"
        squad = json.loads((dataset.tasks_dir / task / name).read_text())
        assert squad["version"] == version
        qas = [(p["context"], qa) for article in squad["data"] for p in article["paragraphs"] for qa in p["qas"]]
        assert len(qas) == expected == dataset.task_examples[task][name]
        assert all(article["title"] for article in squad["data"])
        for context, qa in qas:
            assert qa["id"] and qa["question"]
            assert ("is_impossible" in qa) == (version == "v2.0")
            impossible = qa.get("is_impossible", False)
            assert (qa["answers"] == []) == impossible
            for answer in qa["answers"] + qa.get("plausible_answers", []):
                start = answer["answer_start"]
                assert context[start : start + len(answer["text"])] == answer["text"]
        if version == "v2.0":
            assert 0 < sum(qa["is_impossible"] for _, qa in qas) < len(qas)


def test_swag_csv_has_the_official_columns(dataset: SynthSummary) -> None:
    for name in ("train.csv", "val.csv"):
        with (dataset.tasks_dir / "swag" / name).open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == SWAG_COLUMNS
        assert len(rows) == dataset.task_examples["swag"][name]
        assert all(r["startphrase"] == f"{r['sent1']} {r['sent2']}" for r in rows)
        assert {r["label"] for r in rows} == {"0", "1", "2", "3"}
        assert [r[""] for r in rows] == [str(i) for i in range(len(rows))]


def test_piqa_files_pair_jsonl_with_label_lists(dataset: SynthSummary) -> None:
    for split, expected in (("train", SMALL.task_train_examples), ("valid", SMALL.task_dev_examples)):
        folder = dataset.tasks_dir / "piqa"
        examples = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
        labels = (folder / f"{split}-labels.lst").read_text().splitlines()
        assert len(examples) == len(labels) == expected
        assert all(list(e) == ["id", "goal", "sol1", "sol2"] for e in examples)
        assert set(labels) == {"0", "1"}


def test_tracie_lines_follow_the_released_format(dataset: SynthSummary) -> None:
    pattern = re.compile(r"event: (.+) (starts|ends) (before|after) (.+) story: (.+)\tanswer: (positive|negative)")
    splits = {"tracie_train.txt": SMALL.task_train_examples, "tracie_test.txt": SMALL.task_dev_examples}
    for name, expected in splits.items():
        lines = (dataset.tasks_dir / "tracie" / name).read_text().splitlines()
        assert len(lines) == expected
        matches = [pattern.fullmatch(line) for line in lines]
        assert all(matches)
        for positive, negative in zip(matches[::2], matches[1::2], strict=True):  # each statement and its flip
            assert (positive[6], negative[6]) == ("positive", "negative")
            assert positive[1] == negative[1] and positive[3] != negative[3] and positive[5] == negative[5]


def test_tracie_asks_about_each_story_several_times_over_the_file(dataset: SynthSummary) -> None:
    """As the released files do (4,248 test statements about 342 stories, a story's pairs apart), which is what
    makes TRACIE's outcomes cluster by story (`task_scores.story_of`)."""
    lines = (dataset.tasks_dir / "tracie" / "tracie_train.txt").read_text().splitlines()
    stories = [line.split(" story: ")[1].split("\t")[0] for line in lines[::2]]  # one per statement and its flip
    assert max(Counter(stories).values()) >= 3
    assert len([story for story, _ in itertools.groupby(stories)]) > len(set(stories))  # some story's pairs apart


def test_sst2_labels_are_learnable_from_the_words(dataset: SynthSummary) -> None:
    """A bag-of-words naive Bayes fit on train beats chance on dev: the words carry the label."""
    train, dev = (read_tsv(dataset.tasks_dir / "sst2" / name)[1:] for name in ("train.tsv", "dev.tsv"))
    counts = {label: Counter(w for s, y in train if y == label for w in s.split()) for label in ("0", "1")}
    vocab = set(counts["0"]) | set(counts["1"])

    def score(sentence: str, label: str) -> float:
        total = sum(counts[label].values()) + len(vocab)
        return sum(math.log((counts[label][w] + 1) / total) for w in sentence.split())

    correct = sum(max(("0", "1"), key=lambda label: score(s, label)) == y for s, y in dev)
    assert correct / len(dev) > 0.8


def test_corrupt_video_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(corrupt_video(tmp_path / "garbage.mp4")))


def test_truncated_video_cannot_be_opened(dataset: SynthSummary, tmp_path: Path) -> None:
    source = sorted(dataset.videos_dir.glob("*.mp4"))[0]
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(truncate_video(source, tmp_path / "cut.mp4")))


def test_audio_only_file_opens_but_has_no_video_stream(tmp_path: Path) -> None:
    with av.open(str(write_audio_only(tmp_path / "tone.mp4"))) as container:
        assert len(container.streams.video) == 0 and len(container.streams.audio) == 1
        assert container.duration / av.time_base == pytest.approx(1.0, abs=0.1)


def test_generate_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("stale")
    with pytest.raises(VlkdError, match="not empty"):
        generate(tmp_path, SMALL)


def test_config_rejects_frames_yuv420p_cannot_hold() -> None:
    with pytest.raises(VlkdError, match="even"):
        SynthConfig(width=127)


def test_default_config_builds_the_documented_sizes(tmp_path: Path) -> None:
    summary = generate(tmp_path / "default")
    assert (summary.videos, len(list(summary.videos_dir.glob("*.mp4")))) == (16, 16)
    assert summary.corpus_paragraphs == 1200 and summary.corpus_lines > 2000
    assert all(n == 300 for task in summary.task_examples.values() for f, n in task.items() if "train" in f)


def _by_video(captions: list[Caption]) -> dict[str, list[Caption]]:
    grouped: dict[str, list[Caption]] = {}
    for caption in captions:
        grouped.setdefault(caption.video_id, []).append(caption)
    return grouped


def test_the_demo_profile_writes_the_text_it_wrote_before_profiles_existed(dataset: SynthSummary) -> None:
    """sha256 of every file but the mp4s (their bytes depend on the x264 build), recorded from the generator before
    `SynthConfig.profile` existed: the default profile, and so the quickstart, must not change. Recorded again when
    TRACIE's stories got several statements each, scattered over the file as released, and when the GLUE diagnostic
    asked each sentence pair both ways, as released (the quickstart reads neither; no other file changed)."""
    digest = hashlib.sha256()
    for name, data in all_files(dataset.root).items():
        if not name.endswith(".mp4"):
            digest.update(name.encode() + data)
    assert digest.hexdigest() == "ce00aeeb6ddbcbc88cd6d8ff76fe24f983c575dc886ca33514944485fe03baea"


def test_howto_videos_have_the_clips_asked_for_and_last_minutes() -> None:
    videos = _by_video(howto_captions(seed=0, videos=6))
    assert len(videos) == 6
    for captions in videos.values():
        assert len(captions) == 100
        assert 90 <= captions[-1].end <= 150
    assert [len(c) for c in _by_video(howto_captions(seed=0, videos=2, clips_per_video=7)).values()] == [7, 7]


def test_howto_clips_are_stored_video_after_video_in_time_order() -> None:
    captions = howto_captions(seed=0, videos=4)
    runs = [video_id for video_id, _ in itertools.groupby(c.video_id for c in captions)]
    assert len(runs) == len(set(runs)) == 4, "each video's clips are contiguous"
    for clips in _by_video(captions).values():
        assert all(a.start < b.start for a, b in itertools.pairwise(clips))
        assert all(c.end > c.start >= 0 for c in clips)


def test_each_howto_clip_overlaps_the_next_and_the_last_ends_the_video() -> None:
    for video in howto_videos(seed=0, videos=3):
        clips = video.captions
        assert all(b.start < a.end for a, b in itertools.pairwise(clips)), "rolling windows, as ASR captions are"
        assert max(c.end for c in clips) == clips[-1].end == video.seconds == video.scenes[-1].end


def test_howto_captions_are_lower_case_unpunctuated_and_full_of_fillers() -> None:
    texts = [c.text for c in howto_captions(seed=0, videos=2)]
    assert all(re.fullmatch(r"[a-z]+( [a-z]+)*", text) for text in texts)
    with_filler = [t for t in texts if _without_fillers(t) != t]
    assert len(with_filler) >= 0.4 * len(texts)
    assert all(re.search(rf"\b{filler}\b", " ".join(texts)) for filler in FILLERS)


def test_each_howto_caption_names_the_scene_on_screen_at_its_midpoint() -> None:
    for video in howto_videos(seed=0, videos=2):
        named = [_without_fillers(c.text) == describe(video.scene_at((c.start + c.end) / 2)) for c in video.captions]
        assert all(named)
        assert len({describe(s) for s in video.scenes}) > 5, "the narration changes with the scenes"


def test_howto_timeline_is_fixed_by_the_seed() -> None:
    assert howto_captions(seed=0, videos=2) == howto_captions(seed=0, videos=2)
    assert howto_captions(seed=0, videos=2) != howto_captions(seed=1, videos=2)


def test_howto_profile_writes_the_timeline_and_mp4s_as_long_as_their_captions(howto: SynthSummary) -> None:
    captions = captions_of(howto)
    assert captions == howto_captions(HOWTO.seed, HOWTO.num_videos, HOWTO.clips_per_video)
    assert howto.segments == len(captions) == 200
    total = 0.0
    for stem, clips in _by_video(captions).items():
        with av.open(str(howto.videos_dir / f"{stem}.mp4")) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            duration = float(stream.duration * stream.time_base)
            assert stream.average_rate == HOWTO.fps
        assert frames == round(clips[-1].end * HOWTO.fps)
        assert duration == pytest.approx(max(c.end for c in clips))
        total += duration
    assert howto.video_seconds == pytest.approx(total)


def test_howto_frames_show_the_colours_their_captions_name(howto: SynthSummary) -> None:
    for stem, clips in _by_video(captions_of(howto)).items():
        # the frame on screen at each midpoint of the first clips, a few scenes' worth
        wanted = {math.floor((c.start + c.end) / 2 * HOWTO.fps): c for c in clips[:12]}
        frames = _frames_at(howto.videos_dir / f"{stem}.mp4", set(wanted))
        for index, caption in wanted.items():
            named = {colour for colour in COLOURS if colour in _without_fillers(caption.text).split()}
            for colour in COLOURS:
                pixels = int(colour_mask(frames[index], colour).sum())
                assert (pixels >= 50) if colour in named else (pixels <= 10), (caption, index, colour, pixels)


def test_howto_profile_corpus_is_the_long_articles(howto: SynthSummary) -> None:
    lines = (howto.text_dir / CORPUS_FILE).read_text().split("\n")[:-1]
    expected = long_articles(HOWTO.seed, HOWTO.articles, HOWTO.words_per_article)
    assert [line.strip() for line in lines] == expected
    assert all(line == " " or (line.startswith(" ") and line.endswith(" ")) for line in lines)
    assert howto.corpus_lines == len(expected)


def test_long_articles_are_thousands_of_words_over_sections_with_distinct_titles() -> None:
    articles = _articles(long_articles(seed=0, articles=4, words_per_article=3000))
    assert [title for title, _ in articles] == [f"= {article_name(k).capitalize()} =" for k in range(4)]
    for _, body in articles:
        paragraphs = [line for line in body if line and not line.startswith("=")]
        assert 3000 <= sum(len(p.split()) for p in paragraphs) <= 3200
        assert len([line for line in body if line.startswith("= = ")]) >= 3
        assert len(paragraphs) >= 20
        assert body[0] == "" and all(line == "" for line in body[::2]), "content lines alternate with blank lines"


def test_every_sentence_of_an_article_begins_with_its_name_and_names_no_other() -> None:
    for index, (_, body) in enumerate(_articles(long_articles(seed=3, articles=5, words_per_article=500))):
        paragraphs = [line for line in body if line and not line.startswith("=")]
        for paragraph in paragraphs:
            assert articles_in(paragraph) == [index]
            sentences = [s.strip() for s in paragraph.split(" .") if s.strip()]
            assert all(s.split()[0] == article_name(index).capitalize() for s in sentences)


def test_article_names_are_distinct_words_that_map_back_to_their_index() -> None:
    names = [article_name(k) for k in range(6000)]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z]+", n) for n in names)
    for k in (0, 1, 69, 70, 4899, 4900, 123_456):
        assert articles_in(f"So {article_name(k).upper()} moves up , then {article_name(k + 1)} .") == [k, k + 1]
    assert articles_in("zorba is no article, nor is zorbababa") == []


def test_a_tokenized_packed_sequence_says_which_articles_it_mixes() -> None:
    """What a batching test does: train the text stage's tokenizer on the corpus, pack its paragraphs into
    sequences, decode each and map it to its articles. Every sequence holding a whole sentence names its one or two
    articles; one naming none is a paragraph's tail, shorter than a sentence, cut off by packing."""
    from vlkd.data.text import corpus_lines, pack_sequences, tokenize_lines, train_tokenizer

    lines = list(corpus_lines(long_articles(seed=0, articles=4, words_per_article=1000)))
    tokenizer = train_tokenizer(lambda: lines, vocab_size=512, min_frequency=1, lowercase=True)
    sentences = [f"{s} ." for line in lines for s in line.split(" . ")]
    longest_sentence = max(len(ids) for ids in tokenize_lines(tokenizer.backend_tokenizer, sentences))
    ids = tokenize_lines(tokenizer.backend_tokenizer, lines)
    sequences = list(pack_sequences(ids, 128, tokenizer.cls_token_id, tokenizer.sep_token_id, pack=True))
    mixed = [articles_in(tokenizer.decode(s, skip_special_tokens=True)) for s in sequences]
    assert all(len(found) <= 2 for found in mixed)
    assert all(len(s) - 2 < longest_sentence for s, found in zip(sequences, mixed, strict=True) if not found)
    assert sum(not found for found in mixed) < len(mixed) / 10
    assert [k for k, _ in itertools.groupby(k for found in mixed for k in found)] == [0, 1, 2, 3]


def test_an_unknown_profile_is_one_error_line_listing_the_profiles(vlkd_cli, tmp_path: Path) -> None:
    result = vlkd_cli("data", "synth", "--profile", "bogus", "--out", str(tmp_path / "out"), "--no-push")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: SynthConfig: unknown profile 'bogus'; available: demo, howto100m-wiki103"
    ]
    assert not (tmp_path / "out").exists()


def _frames_at(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """The decoded frames (RGB) of the given indices, decoding no further than the last."""
    frames = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in indices:
                frames[index] = frame.to_ndarray(format="rgb24")
            if index >= max(indices):
                break
    return frames


def _without_fillers(text: str) -> str:
    for filler in sorted(FILLERS, key=len, reverse=True):
        text = re.sub(rf"\b{filler}\b", " ", text)
    return " ".join(text.split())


def _articles(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(title line, the lines after it up to the next title) of each article in Wiki103-layout `lines`."""
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"= [^=]+ =", line)]
    return [(lines[a], lines[a + 1 : b]) for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
