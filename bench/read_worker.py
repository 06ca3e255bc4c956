"""What a Ray Data read worker pays to tokenise the teacher's captions: the rows preparer it unpickles, now
(`vlkd.data.caption_tokens.CaptionTokens`) against before (the teacher's whole task, whose module imports torch and
transformers).

    python -m bench.read_worker [--rounds 3] [--captions 256]

Each form is pickled as Ray ships a task's function (cloudpickle), then loaded in a fresh interpreter (a new read
worker), which tokenises one block of HowTo100M-shaped ASR captions with it: the CPU-seconds from the unpickling
to the block's ids, and the process's PSS and RSS after it (`/proc/self/smaps_rollup`). The forms alternate,
`--rounds` times each; a BERT-base-sized vocabulary (30,522 tokens), as a real teacher's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import cloudpickle
import pyarrow as pa

from bench.common import bert_tokenizer, machine
from bench.train_step import teacher_task
from vlkd.data.synth_asr import howto_captions

WORKER = """
import json, pickle, sys, time
started = time.process_time()
prepare, rows = pickle.loads(sys.stdin.buffer.read())
ids = prepare(rows)
seconds = time.process_time() - started
memory = dict(line.split(":") for line in open("/proc/self/smaps_rollup").read().splitlines()[1:])
kb = lambda key: int(memory[key].split()[0])
print(json.dumps({"cpu_s": seconds, "pss_mb": kb("Pss") / 1024, "rss_mb": kb("Rss") / 1024,
                  "torch": "torch" in sys.modules, "rows": ids.num_rows}))
"""


class WholeTask:
    """The form before: the read task held the teacher's task and tokenised with its transformers tokenizer."""

    def __init__(self, task: Any) -> None:
        self.task = task

    def __call__(self, rows: pa.Table) -> pa.Table:
        texts = rows.column("text").to_pylist()
        encoded = self.task.tokenizer(texts, truncation=True, max_length=self.task.spec.max_text_len)
        ids = pa.array(encoded["input_ids"], pa.list_(pa.int32()))
        return rows.drop_columns(["text"]).append_column("input_ids", ids)


def worker_cost(prepare: Any, rows: pa.Table) -> dict[str, Any]:
    shipped = cloudpickle.dumps((prepare, rows))
    done = subprocess.run([sys.executable, "-c", WORKER], input=shipped, capture_output=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--captions", type=int, default=256)
    args = parser.parse_args()
    print(machine())
    task = teacher_task("tiny", bert_tokenizer(), "unmasked")
    captions = [c.text for c in howto_captions(seed=0, videos=-(-args.captions // 111), clips_per_video=111)]
    rows = pa.table({"text": captions[: args.captions]})
    # WholeTask lives in this script, which cloudpickle ships by value: the worker imports what the task's own
    # module (vlkd.jobs.teacher) imports, as the bound method `TeacherTask.prepare_rows` made it do.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    forms = {"before (the whole task)": WholeTask(task), "now (CaptionTokens)": task.prepare_rows}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in forms}
    for _ in range(args.rounds):
        for name, prepare in forms.items():
            results[name].append(worker_cost(prepare, rows))
    for name, runs in results.items():
        cpu = ", ".join(f"{r['cpu_s']:.2f}" for r in runs)
        pss = ", ".join(f"{r['pss_mb']:.0f}" for r in runs)
        rss = ", ".join(f"{r['rss_mb']:.0f}" for r in runs)
        print(f"{name}: torch imported {runs[0]['torch']}; CPU-s {cpu}; PSS MB {pss}; RSS MB {rss}")


if __name__ == "__main__":
    main()
