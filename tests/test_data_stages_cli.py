"""The data stages as a user runs them: `vlkd data synth`, then `vlkd submit preprocess|text` with the tiny
example specs, each job in its own process with its own local Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_synth_then_both_data_stages_publish_described_artifacts(vlkd_cli, tmp_path):
    env = {"VLKD_STORE": str(tmp_path / "store")}
    synth = vlkd_cli("data", "synth", "--out", str(tmp_path / "synth"), "--videos", "4", env=env)
    assert synth.returncode == 0, synth.stderr
    assert "published dataset/synth-videos:v1" in synth.stdout and "published dataset/synth-sst2:v1" in synth.stdout

    for stage, outputs in (("preprocess", ["features/tiny:v1"]), ("text", ["tokenizer/tiny:v1", "corpus/tiny:v1"])):
        result = vlkd_cli("submit", stage, "--spec", str(EXAMPLES / f"{stage}.yaml"), "--wait", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [line for line in result.stdout.splitlines() if line.startswith("published")] == [
            f"published {o}" for o in outputs
        ]

    features = json.loads(vlkd_cli("artifacts", "show", "features/tiny", "--json", env=env).stdout)
    assert features["parents"] == ["dataset/synth-videos:v1"]
    assert features["metrics"]["videos"] == 4
    # the demo encoders have no weights: neither random nor pretrained, and the manifest says which they are
    assert features["attributes"]["pretrained"] is False and features["attributes"]["random_init"] is False
    assert features["attributes"]["encoder_2d"]["name"] == "pixels"
    shown = vlkd_cli("artifacts", "show", "corpus/tiny", env=env).stdout
    assert "parents   dataset/synth-text:v1, tokenizer/tiny:v1" in shown


def test_submit_rejects_an_invalid_spec_before_running_anything(vlkd_cli, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("stage: preprocess\nname: x\nvideos: dataset/v\nencoder_3d: {init: random}\nmax_frame: 3\n")
    result = vlkd_cli("submit", "preprocess", "--spec", str(spec), env={"VLKD_STORE": str(tmp_path / "store")})
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {spec}: max_frame: unknown field; did you mean 'max_frames'?"
    assert not (tmp_path / "store").exists()


def test_synth_writes_to_an_s3_prefix(vlkd_cli, s3_endpoint, new_bucket):
    import boto3

    bucket = new_bucket()
    result = vlkd_cli(
        "data",
        "synth",
        "--out",
        f"s3://{bucket}/synth",
        "--videos",
        "2",
        "--no-push",
        env={"AWS_ENDPOINT_URL": s3_endpoint},
    )
    assert result.returncode == 0, result.stderr
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert {
        "synth/videos/captions.jsonl",
        "synth/videos/synth_0000.mp4",
        "synth/text/corpus.txt",
        "synth/tasks/sst2/train.tsv",
    } <= keys
