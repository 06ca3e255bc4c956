"""A small, real, offline dataset for demos and tests: videos with captions, a text corpus and task files.

`generate(out)` writes, deterministically for `SynthConfig.seed`:
- `videos/`: mp4s (H.264, yuv420p) of moving coloured shapes and `captions.jsonl` in HowTo100M's layout, one line
  per segment, whose text names exactly the colours, shapes and motions on screen (the stand-in for HowTo100M);
- `text/corpus.txt`: a Wiki103-layout corpus (the stand-in for Wiki103) using the same words among filler text;
- `tasks/<task>/`: the downstream tasks of Sec. 4.1 in their official file formats (`synth_tasks`, `synth_qa`).
The world's vocabulary and `describe` live in `synth_world`; the media and bad-input helpers in `synth_video`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from vlkd.data.captions import Caption, dump_captions
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
    plan_video,
    sample_actors,
)
from vlkd.errors import VlkdError

__all__ = [
    "CAPTIONS_FILE",
    "CORPUS_FILE",
    "TASKS",
    "TASKS_DIR",
    "TEXT_DIR",
    "VIDEOS_DIR",
    "SynthConfig",
    "SynthSummary",
    "corrupt_video",
    "describe",
    "generate",
    "plan_videos",
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
    """Sizes of the synthetic dataset; the defaults build in seconds on a laptop."""

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

    def __post_init__(self) -> None:
        problems = []
        if self.num_videos < 1 or self.fps < 1 or self.max_segments < 1:
            problems.append("num_videos, fps and max_segments must be at least 1")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            problems.append(f"width x height {self.width}x{self.height}: both must be even (yuv420p) and >= 32")
        if not 0 < self.min_segment_seconds <= self.min_seconds <= self.max_seconds:
            problems.append(
                f"need 0 < min_segment_seconds ({self.min_segment_seconds}) <= min_seconds ({self.min_seconds}) "
                f"<= max_seconds ({self.max_seconds})"
            )
        if min(self.corpus_paragraphs, self.task_train_examples, self.task_dev_examples) < 1:
            problems.append("corpus_paragraphs, task_train_examples and task_dev_examples must be at least 1")
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


def write_videos(folder: Path, config: SynthConfig) -> list[VideoPlan]:
    folder.mkdir(parents=True)
    plans = plan_videos(config)
    for plan in plans:
        write_video(plan, folder / f"{plan.video_id}.mp4", config.width, config.height)
    captions = [Caption(p.video_id, s.start, s.end, describe(s)) for p in plans for s in p.segments]
    (folder / CAPTIONS_FILE).write_text(dump_captions(captions))
    return plans


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


def write_corpus(path: Path, seed: int, paragraphs: int) -> int:
    """Write the corpus as Wiki103's token files are: every line framed by spaces, a blank line is one space."""
    path.parent.mkdir(parents=True)
    lines = corpus_lines(random.Random(f"vlkd-synth:{seed}:corpus"), paragraphs)
    path.write_text("".join(f" {line} \n" if line else " \n" for line in lines))
    return len(lines)


def generate(out: Path, config: SynthConfig = SynthConfig()) -> SynthSummary:
    """Write the whole synthetic dataset under `out` (which must be empty or absent) and say what was written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise VlkdError(
            f"{out} is not empty; synthetic data goes into a fresh folder so no stale file mixes in: "
            "remove it or choose another (`vlkd data synth --force` replaces it)"
        )
    videos_dir, text_dir, tasks_dir = out / VIDEOS_DIR, out / TEXT_DIR, out / TASKS_DIR
    plans = write_videos(videos_dir, config)
    lines = write_corpus(text_dir / CORPUS_FILE, config.seed, config.corpus_paragraphs)
    counts = write_tasks(tasks_dir, config.seed, config.task_train_examples, config.task_dev_examples)
    return SynthSummary(
        root=out,
        videos_dir=videos_dir,
        text_dir=text_dir,
        tasks_dir=tasks_dir,
        videos=len(plans),
        segments=sum(len(p.segments) for p in plans),
        video_seconds=sum(p.seconds for p in plans),
        corpus_paragraphs=config.corpus_paragraphs,
        corpus_lines=lines,
        task_examples=counts,
    )
