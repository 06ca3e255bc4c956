"""The synthetic world shared by the synthetic videos, corpus and task files: coloured shapes that move.

One vocabulary (colours, shapes, motions) feeds the pixels, the captions, the corpus and the downstream tasks, so
words and frames are correlated the way HowTo100M narration and video are, and a test elsewhere can rebuild the
text of any segment with `describe`. Sampling takes a `random.Random`, so a seed fixes everything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TypeVar

RGB = tuple[int, int, int]
T = TypeVar("T")

# Shape colours far apart in RGB (>= 90 on some channel) so each survives yuv420p + H.264 recognisably.
COLOURS: dict[str, RGB] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (40, 80, 230),
    "yellow": (240, 220, 50),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
# Backgrounds are grey levels, never a shape colour, so a shape is always visible and never named by them.
BACKGROUNDS: dict[str, RGB] = {"black": (16, 16, 16), "gray": (110, 110, 110), "white": (235, 235, 235)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Direction of travel in image coordinates (x right, y down).
MOTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
MOTION_PHRASES: dict[str, str] = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
    "still": "stays still",
}
# World facts the corpus states and the knowledge-style tasks (diagnostic, SWAG, PIQA) ask about.
OUTCOMES: dict[str, str] = {
    "left": "further to the left than it started",
    "right": "further to the right than it started",
    "up": "higher than it started",
    "down": "lower than it started",
    "still": "where it started",
}
CORNERS: dict[str, str] = {"circle": "no corners", "square": "four corners", "triangle": "three corners"}

TRAVEL = 0.45
"""Fraction of the frame's width (or height) a moving shape crosses during its segment."""
SIZE = 0.14
"""Shape radius as a fraction of the frame's shorter side."""
_MIN_GAP = 0.3  # start positions of two shapes differ by this fraction on some axis, so neither hides the other


@dataclass(frozen=True)
class Actor:
    """One shape in a segment; `x, y` is its centre at the segment's start, as fractions of the frame."""

    colour: str
    shape: str
    motion: str
    x: float
    y: float


@dataclass(frozen=True)
class Segment:
    """A span of a video (seconds) in which each actor does one thing; one caption describes it."""

    start: float
    end: float
    actors: tuple[Actor, ...]


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    frames: int
    fps: int
    background: str
    segments: tuple[Segment, ...]

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def indefinite(words: str) -> str:
    """`a red circle`, `an orange square`."""
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def actor_phrase(actor: Actor, article: str = "a") -> str:
    """`a red circle moves to the left`: the words for what one actor visibly does (`article`: a or the)."""
    named = f"{actor.colour} {actor.shape}"
    return f"{indefinite(named) if article == 'a' else f'{article} {named}'} {MOTION_PHRASES[actor.motion]}"


def describe_actors(actors: tuple[Actor, ...]) -> str:
    return " and ".join(actor_phrase(actor) for actor in actors)


def describe(segment: Segment) -> str:
    """The caption of a segment, naming every actor's colour, shape and motion and nothing else."""
    return describe_actors(segment.actors)


def position(actor: Actor, progress: float) -> tuple[float, float]:
    """Centre (fractions of the frame) after `progress` in [0, 1] of the segment: uniform motion over TRAVEL."""
    dx, dy = MOTIONS[actor.motion]
    return actor.x + dx * TRAVEL * progress, actor.y + dy * TRAVEL * progress


def _start(rng: random.Random, direction: int) -> float:
    """Start coordinate on one axis such that the whole travel stays inside the middle of the frame."""
    if direction == 0:
        return rng.uniform(0.25, 0.75)
    low = rng.uniform(0.25, 0.3)
    return low if direction > 0 else 1 - low


def sample_actor(rng: random.Random, exclude_colours: tuple[str, ...] = ()) -> Actor:
    colour = rng.choice([c for c in COLOURS if c not in exclude_colours])
    shape, motion = rng.choice(SHAPES), rng.choice(list(MOTIONS))
    dx, dy = MOTIONS[motion]
    return Actor(colour, shape, motion, _start(rng, dx), _start(rng, dy))


def sample_actors(rng: random.Random, two: float = 0.35) -> tuple[Actor, ...]:
    """One actor, or with probability `two` a second of another colour that starts clear of the first."""
    first = sample_actor(rng)
    if rng.random() >= two:
        return (first,)
    for _ in range(20):
        second = sample_actor(rng, exclude_colours=(first.colour,))
        if max(abs(first.x - second.x), abs(first.y - second.y)) >= _MIN_GAP:
            return first, second
    return (first,)


def balanced(rng: random.Random, count: int, labels: tuple[T, ...]) -> list[T]:
    """`count` labels in random order, each as often as the others (up to one), so chance is 1/len(labels)."""
    drawn = [labels[i % len(labels)] for i in range(count)]
    rng.shuffle(drawn)
    return drawn


def _segment_frames(rng: random.Random, frames: int, min_frames: int, max_segments: int) -> list[int]:
    """Lengths (frames) of 1..max_segments segments that tile the video, each at least `min_frames` long."""
    count = rng.randint(1, max(1, min(max_segments, frames // min_frames)))
    spare = frames - count * min_frames
    cuts = sorted(rng.randint(0, spare) for _ in range(count - 1))
    extras = [b - a for a, b in zip([0, *cuts], [*cuts, spare], strict=True)]
    return [min_frames + extra for extra in extras]


def plan_video(
    rng: random.Random,
    video_id: str,
    *,
    fps: int,
    min_seconds: float,
    max_seconds: float,
    max_segments: int,
    min_segment_seconds: float,
) -> VideoPlan:
    """Sample one video: a whole number of frames, segments cut on frame boundaries (times in seconds)."""
    frames = round(rng.uniform(min_seconds, max_seconds) * fps)
    min_frames = max(1, round(min_segment_seconds * fps))
    segments, first = [], 0
    for length in _segment_frames(rng, frames, min_frames, max_segments):
        segments.append(Segment(first / fps, (first + length) / fps, sample_actors(rng)))
        first += length
    return VideoPlan(video_id, frames, fps, rng.choice(list(BACKGROUNDS)), tuple(segments))
