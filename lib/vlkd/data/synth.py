"""A small, real, offline dataset for demos and tests: videos with captions, a text corpus and task files.

`generate(out)` writes, deterministically for `SynthConfig.seed`:
- `videos/`: mp4s (H.264, yuv420p) of moving coloured shapes and `captions.jsonl` in HowTo100M's layout, one line
  per segment, whose text names exactly the colours, shapes and motions on screen (the stand-in for HowTo100M);
- `text/corpus.txt`: a Wiki103-layout corpus (the stand-in for Wiki103) using the same words among filler text;
- `tasks/<task>/`: the downstream tasks of Sec. 4.1 in their official file formats (`synth_tasks`, `synth_qa`).
`SynthConfig.profile` picks the shapes of the first two: "demo" (short videos with a few exact captions, short
paragraphs) or "howto100m-wiki103" (the paper's pretraining data's shapes: minutes-long videos of about 100
overlapping ASR-like clips from `synth_asr`, and Wikipedia-length articles from `long_articles`).
`publish_dataset` imports what `generate` wrote as dataset artifacts, keeping a part's version while it is unchanged.
The world's vocabulary and `describe` live in `synth_world`; the media and bad-input helpers in `synth_video`.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlkd.artifacts import ArtifactStore, Manifest, collect_files
from vlkd.data.captions import Caption, dump_captions
from vlkd.data.synth_asr import howto_videos
from vlkd.data.synth_tasks import TASKS, write_tasks
from vlkd.data.synth_video import corrupt_video, truncate_video, write_audio_only, write_video
from vlkd.data.synth_world import (
    COLOURS,
    CORNERS,
    MOTION_PHRASES,
    OUTCOMES,
    SHAPES,
    VideoPlan,
    describe,
    describe_actors,
    indefinite,
    plan_video,
    sample_actors,
)
from vlkd.errors import VlkdError

__all__ = [
    "CAPTIONS_FILE",
    "CORPUS_FILE",
    "PROFILES",
    "TASKS",
    "TASKS_DIR",
    "TEXT_DIR",
    "VIDEOS_DIR",
    "SynthConfig",
    "SynthSummary",
    "article_name",
    "articles_in",
    "corrupt_video",
    "describe",
    "generate",
    "long_articles",
    "plan_videos",
    "publish_dataset",
    "truncate_video",
    "write_audio_only",
]

VIDEOS_DIR = "videos"
TEXT_DIR = "text"
TASKS_DIR = "tasks"
CAPTIONS_FILE = "captions.jsonl"
CORPUS_FILE = "corpus.txt"

_SECTIONS = ("Description", "Motion", "History", "Reception", "In popular culture")
_PLACES = ("river", "old market", "station", "harbour", "library", "cathedral")
_FILLER = (
    "In {year} , the {body} published a report on the {topic} .",
    "The {body} was founded in {year} and is located near the {place} .",
    "According to a survey in {year} , most visitors to the {place} had seen the {topic} .",
    "During the {decade}s , the {body} moved to a new building near the {place} .",
    "The {topic} appears on the coat of arms of the town near the {place} .",
    "Critics of the {body} described the {topic} as a symbol of the {decade}s .",
)
_BODIES = ("museum", "committee", "local council", "university", "art society", "national archive")


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the synthetic dataset; the defaults build in seconds on a laptop.

    The "demo" profile reads `min_seconds` to `min_segment_seconds` and `corpus_paragraphs`; "howto100m-wiki103"
    reads `clips_per_video`, `articles` and `words_per_article` instead. Both read the rest.
    """

    num_videos: int = 16
    seed: int = 0
    min_seconds: float = 4.0
    max_seconds: float = 12.0
    fps: int = 24
    width: int = 128
    height: int = 96
    max_segments: int = 3
    min_segment_seconds: float = 1.0
    corpus_paragraphs: int = 1200
    task_train_examples: int = 300
    task_dev_examples: int = 100
    profile: str = "demo"
    """a name in PROFILES: what the videos, their captions and the corpus look like"""
    clips_per_video: int = 100
    """HowTo100M averages 111 clips per video (Miech et al., 2019)"""
    articles: int = 40
    words_per_article: int = 3000
    """Wiki103's articles average about 3,600 tokens (Merity et al., 2017)"""

    def __post_init__(self) -> None:
        problems = []
        if self.profile not in PROFILES:
            problems.append(f"unknown profile {self.profile!r}; available: {', '.join(PROFILES)}")
        if self.num_videos < 1 or self.fps < 1 or self.max_segments < 1:
            problems.append("num_videos, fps and max_segments must be at least 1")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            problems.append(f"width x height {self.width}x{self.height}: both must be even (yuv420p) and >= 32")
        if not 0 < self.min_segment_seconds <= self.min_seconds <= self.max_seconds:
            problems.append(
                f"need 0 < min_segment_seconds ({self.min_segment_seconds}) <= min_seconds ({self.min_seconds}) "
                f"<= max_seconds ({self.max_seconds})"
            )
        counts = (self.corpus_paragraphs, self.task_train_examples, self.task_dev_examples, self.clips_per_video)
        if min(*counts, self.articles, self.words_per_article) < 1:
            problems.append(
                "corpus_paragraphs, task_train_examples, task_dev_examples, clips_per_video, articles and "
                "words_per_article must be at least 1"
            )
        if problems:
            raise VlkdError("SynthConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote: counts and where."""

    root: Path
    videos_dir: Path
    text_dir: Path
    tasks_dir: Path
    videos: int
    segments: int
    """captions written (clips)"""
    video_seconds: float
    corpus_paragraphs: int
    corpus_lines: int
    task_examples: dict[str, dict[str, int]] = field(default_factory=dict)
    """task -> file name -> examples in it."""


def plan_videos(config: SynthConfig) -> list[VideoPlan]:
    """The videos `generate` draws, without drawing them: what tests compare decoded frames against."""
    rng = random.Random(f"vlkd-synth:{config.seed}:videos")
    return [
        plan_video(
            rng,
            f"synth_{index:04d}",
            fps=config.fps,
            min_seconds=config.min_seconds,
            max_seconds=config.max_seconds,
            max_segments=config.max_segments,
            min_segment_seconds=config.min_segment_seconds,
        )
        for index in range(config.num_videos)
    ]


def _demo_videos(config: SynthConfig) -> tuple[list[VideoPlan], list[Caption]]:
    """Short videos, each segment captioned once with exactly what is on screen."""
    plans = plan_videos(config)
    return plans, [Caption(p.video_id, s.start, s.end, describe(s)) for p in plans for s in p.segments]


def _howto_videos(config: SynthConfig) -> tuple[list[VideoPlan], list[Caption]]:
    """HowTo100M-shaped videos: minutes long, `clips_per_video` overlapping ASR-like clips each (`synth_asr`)."""
    videos = howto_videos(config.seed, config.num_videos, config.clips_per_video)
    return [v.plan(config.fps) for v in videos], [c for v in videos for c in v.captions]


def write_videos(folder: Path, config: SynthConfig) -> tuple[list[VideoPlan], list[Caption]]:
    plans, captions = PROFILES[config.profile].videos(config)
    folder.mkdir(parents=True)
    for plan in plans:
        write_video(plan, folder / f"{plan.video_id}.mp4", config.width, config.height)
    (folder / CAPTIONS_FILE).write_text(dump_captions(captions))
    return plans, captions


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _world_sentence(rng: random.Random) -> str:
    """A sentence about the world the videos show: a scene, an outcome of a motion, or a fact about a shape."""
    shape, motion = rng.choice(SHAPES), rng.choice(list(MOTION_PHRASES))
    return rng.choice(
        (
            f"{describe_actors(sample_actors(rng))} .",
            f"when a {shape} {MOTION_PHRASES[motion]} , it ends {OUTCOMES[motion]} .",
            f"a {shape} has {CORNERS[shape]} .",
            f"{rng.choice(list(COLOURS))} is the colour of the {shape} in many of the videos .",
        )
    )


def _filler_sentence(rng: random.Random) -> str:
    topic = f"{rng.choice(list(COLOURS))} {rng.choice(SHAPES)}"
    year = rng.randint(1850, 2015)
    slots = {"year": year, "decade": year // 10 * 10, "body": rng.choice(_BODIES), "place": rng.choice(_PLACES)}
    return rng.choice(_FILLER).format(topic=topic, **slots)


def _paragraph(rng: random.Random) -> str:
    count = rng.randint(3, 6)
    sentences = [_world_sentence(rng) if rng.random() < 0.5 else _filler_sentence(rng) for _ in range(count)]
    return " ".join(_sentence(s) for s in sentences)


def _heading(title: str, level: int) -> str:
    return " ".join(["="] * level + [title] + ["="] * level)


def corpus_lines(rng: random.Random, paragraphs: int) -> list[str]:
    """Wiki103's layout: ` = Title = `, ` = = Section = = `, one paragraph per line, blank lines between."""
    lines, written = [""], 0
    while written < paragraphs:
        title = rng.choice(("Shapes", "Colours", "Motion", f"{rng.choice(list(COLOURS)).capitalize()} shapes"))
        lines += [_heading(title, 1), ""]
        for section in [None, *rng.sample(_SECTIONS, rng.randint(1, 3))]:
            if written == paragraphs:
                break
            if section:
                lines += [_heading(section, 2), ""]
            for _ in range(min(rng.randint(1, 3), paragraphs - written)):
                lines += [_paragraph(rng), ""]
                written += 1
    return lines


_NAME_PREFIX, _CONSONANTS, _VOWELS = "zor", "bdfgklmnprstvz", "aeiou"
# Syllables are the digits of an article's index in base 70, so its name is made of letters only, reads as one
# word to BERT's pre-tokenizer, and names no other article.
_SYLLABLES = tuple(c + v for c in _CONSONANTS for v in _VOWELS)
_ARTICLE_NAME = re.compile(rf"\b{_NAME_PREFIX}((?:[{_CONSONANTS}][{_VOWELS}]){{2,}})\b")


def article_name(index: int) -> str:
    """The made-up word naming article `index` of `long_articles` ("zorbaba" for 0, "zorbabe" for 1)."""
    if index < 0:
        raise ValueError(f"article index {index} is negative: articles are numbered from 0")
    syllables: list[str] = []
    while index or len(syllables) < 2:
        index, digit = divmod(index, len(_SYLLABLES))
        syllables.insert(0, _SYLLABLES[digit])
    return _NAME_PREFIX + "".join(syllables)


def articles_in(text: str) -> list[int]:
    """Indices of the `long_articles` whose names `text` holds (any case), in order of first appearance: every
    sentence of an article begins with its name, so a decoded token sequence says which articles it mixes."""
    found: list[int] = []
    for match in _ARTICLE_NAME.finditer(text.lower()):
        pairs = (match[1][i : i + 2] for i in range(0, len(match[1]), 2))
        index = functools.reduce(lambda number, s: number * len(_SYLLABLES) + _SYLLABLES.index(s), pairs, 0)
        if article_name(index) == match[0] and index not in found:
            found.append(index)
    return found


def _article_sentence(rng: random.Random, name: str, colour: str, shape: str) -> str:
    """A sentence about the article's subject, a `colour` `shape`: what it does in the videos, or its history."""
    motion, year = rng.choice(list(MOTION_PHRASES)), rng.randint(1850, 2015)
    body, place = rng.choice(_BODIES), rng.choice(_PLACES)
    return rng.choice(
        (
            f"{name} is {indefinite(f'{colour} {shape}')} that {MOTION_PHRASES[motion]} in many of the videos .",
            f"{name} , when it {MOTION_PHRASES[motion]} , ends {OUTCOMES[motion]} .",
            f"{name} has {CORNERS[shape]} , as every {shape} has .",
            f"{name} appears in a video in which {describe_actors(sample_actors(rng))} .",
            f"{name} was described by the {body} in {year} .",
            f"{name} is kept by the {body} near the {place} .",
            f"{name} became a symbol of the {year // 10 * 10}s , according to the {body} .",
            f"{name} was seen by most visitors to the {place} in {year} .",
        )
    )


def _article(rng: random.Random, index: int, words: int) -> list[str]:
    """One article: its name as title, paragraphs of 5-10 sentences until it has `words` words (as Wiki103 counts
    them: space-separated, punctuation included), spread over a lead and every section of _SECTIONS."""
    name, colour, shape = article_name(index).capitalize(), rng.choice(list(COLOURS)), rng.choice(SHAPES)
    paragraphs, written = [], 0
    while written < words:
        paragraph = " ".join(_article_sentence(rng, name, colour, shape) for _ in range(rng.randint(5, 10)))
        paragraphs.append(paragraph)
        written += len(paragraph.split())
    sections = [None, *rng.sample(_SECTIONS, len(_SECTIONS))]
    per_section = math.ceil(len(paragraphs) / len(sections))
    lines = [_heading(name, 1), ""]
    for number, section in enumerate(sections):
        chunk = paragraphs[number * per_section : (number + 1) * per_section]
        if chunk and section:
            lines += [_heading(section, 2), ""]
        for paragraph in chunk:
            lines += [paragraph, ""]
    return lines


def long_articles(seed: int, articles: int, words_per_article: int = 3000) -> list[str]:
    """Wiki103-layout lines of `articles` Wikipedia-length articles, article k titled and narrated by
    `article_name(k)`; the same seed gives the same lines."""
    if articles < 1 or words_per_article < 1:
        raise VlkdError(f"articles ({articles}) and words_per_article ({words_per_article}) must be at least 1")
    rng = random.Random(f"vlkd-synth:{seed}:articles")
    return [""] + [line for index in range(articles) for line in _article(rng, index, words_per_article)]


def write_corpus(path: Path, lines: list[str]) -> None:
    """Write the corpus as Wiki103's token files are: every line framed by spaces, a blank line is one space."""
    path.parent.mkdir(parents=True)
    path.write_text("".join(f" {line} \n" if line else " \n" for line in lines))


def _demo_corpus(config: SynthConfig) -> list[str]:
    return corpus_lines(random.Random(f"vlkd-synth:{config.seed}:corpus"), config.corpus_paragraphs)


def _article_corpus(config: SynthConfig) -> list[str]:
    return long_articles(config.seed, config.articles, config.words_per_article)


@dataclass(frozen=True)
class SynthProfile:
    """How a profile makes its videos (plans to render, captions to write) and its corpus (Wiki103-layout lines)."""

    videos: Callable[[SynthConfig], tuple[list[VideoPlan], list[Caption]]]
    corpus: Callable[[SynthConfig], list[str]]


PROFILES: dict[str, SynthProfile] = {
    "demo": SynthProfile(_demo_videos, _demo_corpus),
    "howto100m-wiki103": SynthProfile(_howto_videos, _article_corpus),
}
"""The shapes `vlkd data synth --profile` offers; "demo" is the default, the quickstart's."""


def generate(out: Path, config: SynthConfig = SynthConfig()) -> SynthSummary:
    """Write the whole synthetic dataset under `out` (which must be empty or absent) and say what was written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise VlkdError(
            f"{out} is not empty; synthetic data goes into a fresh folder so no stale file mixes in: "
            "remove it or choose another (`vlkd data synth --force` replaces it)"
        )
    videos_dir, text_dir, tasks_dir = out / VIDEOS_DIR, out / TEXT_DIR, out / TASKS_DIR
    plans, captions = write_videos(videos_dir, config)
    lines = PROFILES[config.profile].corpus(config)
    write_corpus(text_dir / CORPUS_FILE, lines)
    counts = write_tasks(tasks_dir, config.seed, config.task_train_examples, config.task_dev_examples)
    return SynthSummary(
        root=out,
        videos_dir=videos_dir,
        text_dir=text_dir,
        tasks_dir=tasks_dir,
        videos=len(plans),
        segments=len(captions),
        video_seconds=sum(p.seconds for p in plans),
        corpus_paragraphs=sum(1 for line in lines if line and not line.startswith("= ")),
        corpus_lines=len(lines),
        task_examples=counts,
    )


def publish_dataset(
    store: ArtifactStore, root: Path, config: SynthConfig, name: str = "synth", new_version: bool = False
) -> list[tuple[Manifest, bool]]:
    """Import the dataset `generate` wrote under `root` as `dataset/NAME-videos`, `NAME-text` and `NAME-<task>`:
    (the version, whether it is new) per part. A part its latest version already holds (files, seed, profile) keeps
    that version unless `new_version`, so making the data again (the quickstart, `vlkd data synth`) leaves what was
    made from it up to date."""
    parts = {"videos": root / VIDEOS_DIR, "text": root / TEXT_DIR} | {t: root / TASKS_DIR / t for t in TASKS}
    attributes = {"synthetic": True, "seed": config.seed, "profile": config.profile}
    published = []
    for part, folder in parts.items():
        files = collect_files([folder])
        if new_version:
            published.append((store.publish("dataset", f"{name}-{part}", files, attributes=attributes), True))
        else:
            published.append(store.publish_unless_unchanged("dataset", f"{name}-{part}", files, attributes=attributes))
    return published
