"""Synthetic videos shaped like HowTo100M's (Miech et al., 2019): minutes long, about 100 clips each, captioned
the way YouTube's speech recognition captions narration.

HowTo100M's captions are lower case, unpunctuated, full of fillers ("um", "so", "you know"), and come in rolling
windows: clip i+1 starts before clip i ends. A video averages 111 clips over a few minutes, and preprocessing
writes its clips together, in time order. `howto_videos` draws that timeline for the synthetic world without
rendering a frame: scenes (what is on screen; they tile the video in whole seconds, so they fall on frame
boundaries at any integer fps) and captions that name the scene on screen at their midpoint, among fillers. The
profile's video writer renders those scenes, and a test that needs only the captions calls `howto_captions`:
both read this one timeline.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, replace

from vlkd.data.captions import Caption
from vlkd.data.synth_world import BACKGROUNDS, Segment, VideoPlan, describe, sample_actors
from vlkd.errors import VlkdError

FILLERS: tuple[str, ...] = ("um", "uh", "so", "you know", "okay", "like", "alright", "basically")
"""What the recogniser hears besides the description; none is a word `describe` uses, so removing them gives it back."""

CLIP_GAP = (1.0, 1.5)
"""Seconds between the starts of consecutive clips: about 100 clips make a video of about two minutes."""
OVERLAP = (0.3, 1.0)
"""Seconds a clip runs past the start of the next one (the rolling windows of automatic captions)."""
SCENE_SECONDS = (3, 8)
"""Whole seconds a scene lasts, so several clips in a row narrate the same scene."""
_FILLER_BEFORE, _FILLER_AFTER_WORD = 0.5, 0.15  # chance of a filler opening a clip, and after each word


@dataclass(frozen=True)
class HowToVideo:
    """One video's timeline: `scenes` tile [0, seconds]; `captions` are its clips in time order, overlapping."""

    video_id: str
    seconds: int
    background: str
    scenes: tuple[Segment, ...]
    captions: tuple[Caption, ...]

    def plan(self, fps: int) -> VideoPlan:
        """The frames to render at `fps`: the scenes, which end with the last clip."""
        return VideoPlan(self.video_id, self.seconds * fps, fps, self.background, self.scenes)

    def scene_at(self, seconds: float) -> Segment:
        """The scene on screen at `seconds` (the last one at the video's very end)."""
        starts = [scene.start for scene in self.scenes]
        return self.scenes[bisect.bisect_right(starts, seconds) - 1]


def howto_videos(seed: int, videos: int, clips_per_video: int = 100) -> list[HowToVideo]:
    """The timelines of `videos` HowTo100M-shaped videos, `clips_per_video` clips each; same seed, same videos."""
    if videos < 1 or clips_per_video < 1:
        raise VlkdError(f"videos ({videos}) and clips_per_video ({clips_per_video}) must be at least 1")
    rng = random.Random(f"vlkd-synth:{seed}:howto")
    return [_howto_video(rng, f"howto_{index:04d}", clips_per_video) for index in range(videos)]


def howto_captions(seed: int, videos: int, clips_per_video: int = 100) -> list[Caption]:
    """Every clip of `howto_videos`, as captions.jsonl holds them: video after video, each in time order."""
    return [caption for video in howto_videos(seed, videos, clips_per_video) for caption in video.captions]


def asr_text(rng: random.Random, words: str) -> str:
    """`words` as speech recognition writes a narrator saying them: lower case, unpunctuated, fillers among them."""
    spoken = [rng.choice(FILLERS)] if rng.random() < _FILLER_BEFORE else []
    for word in words.split():
        spoken.append(word)
        if rng.random() < _FILLER_AFTER_WORD:
            spoken.append(rng.choice(FILLERS))
    return " ".join(spoken)


def _clip_times(rng: random.Random, clips: int) -> list[tuple[float, float]]:
    """(start, end) of each clip, centiseconds as automatic captions give them; the last ends on a whole second,
    after every other clip, so the video (whole seconds) ends with it."""
    starts = [round(rng.uniform(0.0, 1.0), 2)]
    for _ in range(clips - 1):
        starts.append(round(starts[-1] + rng.uniform(*CLIP_GAP), 2))
    ends = [round(following + rng.uniform(*OVERLAP), 2) for following in starts[1:]]
    ends.append(float(math.ceil(starts[-1] + CLIP_GAP[1] + OVERLAP[1])))
    return list(zip(starts, ends, strict=True))


def _scenes(rng: random.Random, seconds: int) -> tuple[Segment, ...]:
    bounds = [0]
    while seconds - bounds[-1] > SCENE_SECONDS[1]:
        bounds.append(bounds[-1] + rng.randint(*SCENE_SECONDS))
    bounds.append(seconds)
    return tuple(Segment(float(a), float(b), sample_actors(rng)) for a, b in itertools.pairwise(bounds))


def _howto_video(rng: random.Random, video_id: str, clips: int) -> HowToVideo:
    times = _clip_times(rng, clips)
    seconds = int(times[-1][1])
    video = HowToVideo(video_id, seconds, rng.choice(list(BACKGROUNDS)), _scenes(rng, seconds), ())
    captions = tuple(
        Caption(video_id, start, end, asr_text(rng, describe(video.scene_at((start + end) / 2))))
        for start, end in times
    )
    return replace(video, captions=captions)
