"""What the `preprocess` driver holds to plan a run and cut its clips, at N and 10N captions of HowTo100M's shape
(111 a video, videos' captions interleaved in runs): now against before, on the same files.

    python -m bench.preprocess_driver [--captions 500000] [--factor 10]

Now: `plan_inputs` counts the captions per video and spills them to local files of video-id ranges, which the cut
reads back one range at a time; the run cache's listing (13 span parts a video, HowTo100M's 6.5 min at 32 s a span)
is held as bits per video (`PartCache.completed`). Before: the captions file read whole and parsed into `Caption`s,
grouped per video; the listing held as a set of every part. Each form runs in a fresh process, which reports its
peak RSS and how far above the RSS of its imports that is (these phases run on the driver alone, no Ray), and its
seconds. The encoding between them is not run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import machine
from vlkd.data.captions import Caption, read_captions
from vlkd.data.features import PartCache
from vlkd.data.skipped import SkippedInputs
from vlkd.inputs import InputSource
from vlkd.jobs.preprocess import VIDEO_SUFFIXES, plan_inputs
from vlkd.storage import ObjectInfo, open_storage

CLIPS_PER_VIDEO = 111
SPANS_PER_VIDEO = 13
SPOKEN = "so now we take the flour and mix it in the bowl um you want to add some water then stir it slowly"
WORDS = SPOKEN.split()


def write_inputs(folder: Path, captions: int) -> int:
    """Empty video files and a captions file of `captions` ASR-like lines; returns the number of videos."""
    rng = random.Random(0)
    videos = -(-captions // CLIPS_PER_VIDEO)
    folder.mkdir(parents=True)
    for index in range(videos):
        (folder / f"howto_{index:07d}.mp4").touch()
    runs = [(video, start) for video in range(videos) for start in range(0, CLIPS_PER_VIDEO, 37)]
    rng.shuffle(runs)  # each video's captions in runs of 37, the runs interleaved
    with (folder / "captions.jsonl").open("w") as file:
        for video, first in runs:
            for clip in range(first, min(first + 37, CLIPS_PER_VIDEO)):
                text = " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
                record = {"video_id": f"howto_{video:07d}", "start": clip * 3.5, "end": clip * 3.5 + 3.0, "text": text}
                file.write(json.dumps(record) + "\n")
    return videos


class CacheListing:
    """A run cache's listing, generated: every video's span parts and end record, as the store lists them."""

    def __init__(self, videos: int) -> None:
        self.videos = videos

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for index in range(self.videos):
            name = f"{prefix}/howto_{index:07d}.0123456789ab"
            yield from (ObjectInfo(f"{name}.{span:05d}.npy", 0) for span in range(SPANS_PER_VIDEO))
            yield ObjectInfo(f"{name}.end-{SPANS_PER_VIDEO}.json", 0)


def now(folder: Path, scratch: Path, videos: int) -> int:
    source = InputSource(open_storage(folder.as_uri()), "", folder.as_uri())
    skipped = SkippedInputs(scratch / "skipped.jsonl")
    _, ranges = plan_inputs(source, "captions.jsonl", scratch, skipped)
    clips = sum(len(captions) for _, captions in ranges.videos())
    cached = PartCache(CacheListing(videos), "cache").completed()  # type: ignore[arg-type]
    assert len(cached) == videos
    return clips


def before(folder: Path, scratch: Path, videos: int) -> int:
    listed = [p.stem for p in folder.iterdir() if p.suffix in VIDEO_SUFFIXES]
    lines = (folder / "captions.jsonl").read_bytes().decode().splitlines()
    grouped: dict[str, list[Caption]] = {video_id: [] for video_id in listed}
    for _, caption in read_captions(lines):
        grouped[caption.video_id].append(caption)
    clips = sum(len(grouped[video_id]) for video_id in sorted(grouped))
    parts = set()
    for info in CacheListing(videos).list("cache"):
        video_id, tag, what, _ = info.key.removeprefix("cache/").rsplit(".", 3)
        parts.add((video_id, tag, what))
    return clips


def measure(form: str, folder: Path, videos: int) -> dict[str, float]:
    """The form's clips, seconds, its peak RSS (the kernel's high-water mark, reset after the imports: torch's
    peaks above what the phase holds) and the RSS it started from."""
    base = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux 4.0 on)
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-driver-") as scratch:
        started = time.perf_counter()
        clips = {"now": now, "before": before}[form](folder, Path(scratch), videos)
        seconds = time.perf_counter() - started
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    peak = int(status["VmHWM"].split()[0]) / 1024
    return {"clips": clips, "seconds": seconds, "base_mb": base, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=500_000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--measure", nargs=3, metavar=("FORM", "FOLDER", "VIDEOS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        form, folder, videos = args.measure
        print(json.dumps(measure(form, Path(folder), int(videos))))
        return
    print(machine())
    with tempfile.TemporaryDirectory(prefix="vlkd-bench-inputs-") as root:
        for captions in (args.captions, args.captions * args.factor):
            folder = Path(root) / str(captions)
            videos = write_inputs(folder, captions)
            for form in ("before", "now"):
                command = [sys.executable, "-m", "bench.preprocess_driver", "--measure", form, str(folder), str(videos)]
                cost = json.loads(subprocess.run(command, capture_output=True, check=True, text=True).stdout)
                assert cost["clips"] == videos * CLIPS_PER_VIDEO, cost
                print(
                    f"  {cost['clips']:,} captions, {videos:,} videos, {form}: peak RSS {cost['peak_mb']:.0f} MB, "
                    f"{cost['peak_mb'] - cost['base_mb']:.0f} MB above its imports, "
                    f"{cost['seconds']:.1f} s"
                )


if __name__ == "__main__":
    main()
