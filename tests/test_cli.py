"""The `vlkd` command as a user runs it: a subprocess, real stores, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3_faults import DROP, FaultyS3Proxy

from vlkd.artifacts import ArtifactStore, collect_files
from vlkd.errors import VlkdError
from vlkd.storage import attempts

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    root = tmp_path / "payload"
    (root / "sub").mkdir(parents=True)
    (root / "vocab.txt").write_text("[PAD]\n[UNK]\nred\ncircle\n")
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 5000)
    return root


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str, code: int = 1) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


def test_installed_command_answers_version():
    exe = shutil.which("vlkd")
    assert exe is not None, "the vlkd console script is not on PATH"
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("vlkd ")


def test_help_imports_no_heavy_library():
    probe = (
        "import sys\n"
        "sys.argv = ['vlkd', '--help']\n"
        "from vlkd.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = ('torch', 'ray', 'transformers', 'boto3', 'botocore', 'kubernetes', 'av', 'numpy', 'pyarrow',"
        " 'sklearn', 'scipy', 'matplotlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "artifacts" in result.stdout  # the help was printed
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_help_shows_each_options_default_in_its_brackets(vlkd_cli):
    """Help texts write defaults as `[default: ...]`, which rich markup would take for a tag and drop."""
    shown = " ".join(vlkd_cli("submit", "--help").stdout.split())
    assert "or a folder [default: $VLKD_STORE, else ~/.vlkd/store]" in shown


def test_artifact_round_trip(vlkd_cli, store_uri, payload, tmp_path):
    store = ("--store", store_uri)
    pushed = vlkd_cli("artifacts", "push", "dataset/synth", str(payload), "--attr", "source=unit-test", *store)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == "published dataset/synth:v1 (2 files, 9.8 KiB)"
    second = vlkd_cli("artifacts", "push", "weights/vocab", str(payload / "vocab.txt"), "-p", "dataset/synth", *store)
    assert second.stdout.strip() == "published weights/vocab:v1 (1 file, 23 B)"

    listing = vlkd_cli("artifacts", "ls", "--json", *store)
    assert [(r["artifact"], r["latest"]) for r in json.loads(listing.stdout)] == [
        ("dataset/synth", "dataset/synth:v1"),
        ("weights/vocab", "weights/vocab:v1"),
    ]
    table = vlkd_cli("artifacts", "ls", "dataset", *store).stdout
    assert "dataset/synth" in table and "weights/vocab" not in table

    shown = vlkd_cli("artifacts", "show", "weights/vocab", *store).stdout
    assert "weights/vocab:v1" in shown and "parents   dataset/synth:v1" in shown and "vocab.txt" in shown
    manifest = json.loads(vlkd_cli("artifacts", "show", "dataset/synth:v1", "--json", *store).stdout)
    assert manifest["attributes"] == {"source": "unit-test"}

    lineage = vlkd_cli("artifacts", "lineage", "weights/vocab:v1", *store).stdout.splitlines()
    assert lineage[0].startswith("weights/vocab:v1") and "dataset/synth:v1" in lineage[1]

    tagged = vlkd_cli("artifacts", "tag", "dataset/synth:v1", "golden", *store)
    assert tagged.stdout.strip() == "dataset/synth:golden -> dataset/synth:v1"

    out = tmp_path / "fetched"
    got = vlkd_cli("artifacts", "get", "dataset/synth:golden", "-o", str(out), *store)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"fetched dataset/synth:v1 into {out} (2 files, verified)"
    assert (out / "sub" / "weights.bin").read_bytes() == (payload / "sub" / "weights.bin").read_bytes()


def test_store_comes_from_the_environment_then_the_home_default(vlkd_cli, payload, tmp_path):
    env_store = tmp_path / "env-store"
    assert vlkd_cli("artifacts", "push", "dataset/a", str(payload), env={"VLKD_STORE": str(env_store)}).returncode == 0
    assert (env_store / "artifacts" / "dataset" / "a" / "v1" / "manifest.json").is_file()
    assert vlkd_cli("artifacts", "push", "dataset/b", str(payload)).returncode == 0
    home = Path(os.environ["HOME"])  # the test's own (see conftest)
    assert (home / ".vlkd" / "store" / "artifacts" / "dataset" / "b" / "v1" / "manifest.json").is_file()


def test_push_refuses_a_version_in_the_target(vlkd_cli, payload, tmp_path):
    result = vlkd_cli("artifacts", "push", "dataset/a:v3", str(payload), "--store", str(tmp_path / "s"))
    assert_one_line_error(result, "push creates the next version itself: give KIND/NAME (e.g. dataset/a)", 2)


def test_bad_ref_is_one_line(vlkd_cli, tmp_path):
    assert_one_line_error(vlkd_cli("artifacts", "show", "wiki103", "--store", str(tmp_path)), "invalid artifact ref", 2)


def test_missing_artifact_is_one_line(vlkd_cli, tmp_path):
    result = vlkd_cli("artifacts", "get", "teacher/nope:v2", "--store", str(tmp_path))
    assert_one_line_error(result, "teacher/nope:v2 does not exist")


def test_unreachable_endpoint_is_one_line(vlkd_cli):
    result = vlkd_cli(
        "artifacts", "ls", "--store", "s3://some-bucket/x", env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    assert_one_line_error(result, "cannot reach the S3 endpoint http://127.0.0.1:9")


def test_the_cli_gives_an_s3_request_three_attempts_not_a_jobs_ten(vlkd_cli, s3_endpoint):
    """A person at a terminal waits out every attempt's backoff: ten, where nothing listens, took 9.5-15 s before
    the error. A proxy that closes every connection unanswered counts the attempts."""
    with FaultyS3Proxy(s3_endpoint, 1.0, kinds=(DROP,)) as proxy:
        result = vlkd_cli("artifacts", "ls", "--store", "s3://some-bucket/x", env={"AWS_ENDPOINT_URL": proxy.url})
    assert_one_line_error(result, "S3 request on s3://some-bucket/x/artifacts failed despite retries")
    assert proxy.faults == {DROP: attempts.INTERACTIVE_S3_MAX_ATTEMPTS} and proxy.faults[DROP] == 3
    assert attempts.S3_MAX_ATTEMPTS == 10  # this process, like a job's, was never made interactive


@pytest.mark.parametrize(
    ("address", "error"),
    [
        (
            "127.0.0.1:{port}",
            "the ray backend needs the cluster's dashboard address, http://HOST:8265 (its Job Submission API), not "
            "'127.0.0.1:{port}'; the HOST:6379 that `ray start --head` prints is for nodes joining the cluster",
        ),
        (
            "http://127.0.0.1:{port}",
            "cannot reach the Ray cluster at http://127.0.0.1:{port}: nothing answers there; is the cluster running, "
            "and is this its dashboard's address (http://HOST:8265)?",
        ),
    ],
    ids=["no-scheme", "nothing-listens"],
)
def test_a_ray_address_that_cannot_work_is_one_line(vlkd_cli, tmp_path, refused_port, address, error):
    """Given an address without a scheme, Ray's client looks for a GCS there: 40 s, and warnings from its core on
    the terminal, where nothing answers."""
    port = refused_port
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    store.publish("dataset", "synth-text", collect_files([Path(__file__)]))
    spec = EXAMPLES / "tiny" / "text.yaml"
    address = address.format(port=port)
    result = vlkd_cli(
        "submit", "text", "-f", str(spec), "--backend", "ray", "--address", address, env={"VLKD_STORE": store.uri}
    )
    assert_one_line_error(result, error.format(port=port), 1)


def test_a_librarys_error_is_one_line_and_its_traceback_is_behind_verbose(monkeypatch, capsys):
    """What no vlkd code turned into a user error (a client library's exception) still prints one line, and
    `vlkd -v` shows its traceback."""
    from vlkd.backends import submission
    from vlkd.cli.main import main

    def broken(*args, **kwargs):
        raise ConnectionResetError("the peer reset the connection\nsecond line")

    monkeypatch.setattr(submission, "job_status", broken)
    monkeypatch.setattr(sys, "argv", ["vlkd", "status", "some-job"])
    with pytest.raises(SystemExit) as ended:
        main()
    err = capsys.readouterr().err
    assert ended.value.code == 1 and err.count("\n") == 1, err
    assert "ConnectionResetError: the peer reset the connection (run `vlkd -v ...` for the traceback)" in err
    monkeypatch.setattr(sys, "argv", ["vlkd", "-v", "status", "some-job"])
    with pytest.raises(ConnectionResetError):
        main()


def test_the_clis_three_attempts_last_as_long_as_its_command(monkeypatch, capsys):
    """`main` called in a process that goes on (this test, a notebook) gives the process its jobs' 10 back."""
    from vlkd.backends import submission
    from vlkd.cli.main import main

    during = []

    def status(*args, **kwargs):
        during.append(attempts.S3_MAX_ATTEMPTS)
        raise VlkdError("no such job")

    monkeypatch.setattr(submission, "job_status", status)
    monkeypatch.setattr(sys, "argv", ["vlkd", "status", "some-job"])
    with pytest.raises(SystemExit):
        main()
    assert during == [3] and attempts.S3_MAX_ATTEMPTS == 10
    assert capsys.readouterr().err == "error: no such job\n"


def test_a_pipeline_run_from_the_cli_gets_a_jobs_ten_attempts_again(monkeypatch, tmp_path):
    """`vlkd pipeline run` and the quickstart drive jobs for hours: a blip of the network as a stage ends must not
    stop them, as it would after the 3 attempts of a command that answers at once."""
    from vlkd import pipeline
    from vlkd.cli.pipeline import run_pipeline_file
    from vlkd.pipelines import pipeline_file

    during = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *args: during.append(attempts.S3_MAX_ATTEMPTS))
    with attempts.interactive():
        run_pipeline_file(pipeline_file("tiny"), (tmp_path / "store").as_uri(), "local", {}, None, False, False)
        assert attempts.S3_MAX_ATTEMPTS == 3
    assert during == [10]


def test_gc_lists_and_removes_abandoned_drafts(vlkd_cli, tmp_path):
    store = tmp_path / "s"
    leftover = store / "artifacts" / "dataset" / "a" / "v1" / "files"
    leftover.mkdir(parents=True)
    (leftover / "half.bin").write_bytes(b"...")
    dry = vlkd_cli("artifacts", "gc", "--older-than", "0s", "--dry-run", "--store", str(store))
    assert dry.stdout.splitlines() == ["would remove dataset/a:v1 (never published)", "would remove 1 abandoned draft"]
    assert (leftover / "half.bin").exists()
    assert vlkd_cli("artifacts", "gc", "--older-than", "0s", "--store", str(store)).returncode == 0
    assert not (leftover / "half.bin").exists()
    bad = vlkd_cli("artifacts", "gc", "--older-than", "soon", "--store", str(store))
    assert_one_line_error(bad, "--older-than: invalid duration 'soon'")


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_validate_accepts_the_examples(vlkd_cli, path):
    result = vlkd_cli("validate", str(path))
    assert (result.returncode, result.stdout) == (0, "ok\n")


def test_validate_prints_every_error_with_its_path(vlkd_cli, tmp_path):
    spec = tmp_path / "teacher.yaml"
    spec.write_text(
        "stage: teacher\nname: t\nfeatures: corpus/x\ntokenizer: tokenizer/w\n"
        "model: {preset: tiny, hidden_sise: 32}\ntrain: {batch_size: many}\n"
    )
    result = vlkd_cli("validate", str(spec))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {spec}: features: expected a features artifact ref (e.g. features/NAME:v1), got corpus/x:latest",
        f"error: {spec}: model.hidden_sise: unknown field; did you mean 'hidden_size'?",
        f"error: {spec}: train.batch_size: Input should be a valid integer, unable to parse string as an integer",
    ]


def test_validate_names_the_line_of_a_yaml_syntax_error(vlkd_cli, tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("stage: teacher\nname: [unclosed\n")
    result = vlkd_cli("validate", str(spec))
    assert_one_line_error(result, f"{spec}: YAML syntax error at line 3", 2)


def test_validate_of_a_missing_file(vlkd_cli, tmp_path):
    result = vlkd_cli("validate", str(tmp_path / "nope.yaml"))
    assert_one_line_error(result, f"{tmp_path / 'nope.yaml'}: cannot read", 2)


def test_a_pipeline_job_is_refused_on_the_local_backend_and_both_submits_refuse_a_negative_pending_notice(vlkd_cli):
    pipeline = str(EXAMPLES / "tiny" / "pipeline.yaml")
    refused = "a pipeline job runs on a cluster (--backend ray or k8s): here, `vlkd pipeline run`"
    assert_one_line_error(vlkd_cli("pipeline", "submit", pipeline, "--backend", "local"), refused, 1)
    for command in (["pipeline", "submit", pipeline], ["submit", "text", "-f", str(EXAMPLES / "tiny" / "text.yaml")]):
        negative = vlkd_cli(*command, "--pending-notice", "-1")
        assert_one_line_error(negative, "Invalid value for '--pending-notice': Input should be greater than", 2)


def test_a_usage_error_is_one_line_naming_the_option_or_command(vlkd_cli):
    assert_one_line_error(vlkd_cli("submit", "text"), "Missing option '--spec' / '-f'.", 2)
    assert_one_line_error(vlkd_cli("nosuch"), "No such command 'nosuch'.", 2)


def test_schema_prints_json_schema(vlkd_cli):
    result = vlkd_cli("schema", "distill")
    schema = json.loads(result.stdout)
    assert schema["title"] == "DistillSpec" and "kd" in schema["properties"]
    assert_one_line_error(vlkd_cli("schema", "train"), "unknown stage 'train'; available: preprocess", 2)


def test_the_readme_cli_reference_is_current():
    from vlkd.cli.main import app
    from vlkd.cli.reference import END, START, reference

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert START in readme and END in readme, "the README lost its generated CLI reference"
    written = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert written == reference(app), "the CLI changed: regenerate with `python -m vlkd.cli.reference`"
    for command in ("vlkd submit STAGE", "vlkd logs JOB_ID", "vlkd artifacts get REF", "vlkd quickstart"):
        assert f"**`{command}" in written
