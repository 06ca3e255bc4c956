"""Job control that never surprises (issue 35), through the `vlkd` command as a user runs it: what is refused
before anything is sent (a job id that is not a plain name or is another job's, a spec whose inputs do not exist,
an unknown stage), the same default backend on every command, `validate` printing what `submit` prints, and what a
job that failed at once says for itself (its error, that it had ended, which workers its log has). The job here is
a real local one that fails before it starts Ray, so the file stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli import assert_one_line_error

from vlkd.artifacts import ArtifactStore, collect_files

EXAMPLES = Path(__file__).parent.parent / "examples" / "tiny"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def empty_store(tmp_path) -> dict[str, str]:
    return {"VLKD_STORE": (tmp_path / "store").as_uri()}


@pytest.fixture(scope="module")
def environment_of_a_module_fixture() -> dict[str, str]:
    return dict(os.environ)


def test_a_fixture_made_once_for_a_file_sees_neither_the_developers_home_nor_their_stores_clusters_or_keys(
    environment_of_a_module_fixture,
):
    """Such a fixture (a job submitted once for a file's tests) is set up before the test's own environment: jobs
    it submitted were listed by the developer's `vlkd list`, from their `~/.vlkd/jobs`."""
    from conftest import DEVELOPER_ENV, DEVELOPER_SETTINGS, TEST_CREDENTIALS

    seen = environment_of_a_module_fixture
    assert seen["HOME"] not in (DEVELOPER_ENV.get("HOME"), os.environ["HOME"])  # nor the test's own
    assert [key for key in DEVELOPER_SETTINGS if key in seen] == []
    assert {key: seen.get(key) for key in TEST_CREDENTIALS} == TEST_CREDENTIALS


def test_a_job_id_that_is_not_a_plain_name_is_refused_before_anything_is_written(vlkd_cli, empty_store):
    home = Path(os.environ["HOME"]) / ".vlkd"
    submitted = vlkd_cli("submit", "text", "-f", str(EXAMPLES / "text.yaml"), "--job-id", "../evil", env=empty_store)
    assert_one_line_error(submitted, "invalid job id '../evil': use 1-200 letters, digits, '.', '_' or '-'", 2)
    assert not (home / "evil").exists() and not (home / "jobs").exists()
    for command in ("status", "logs", "cancel"):
        assert_one_line_error(vlkd_cli(command, "../evil"), "invalid job id '../evil'", 2)


def test_an_unknown_stage_is_a_usage_error_that_suggests_the_stage_meant(vlkd_cli, empty_store):
    for command in ("submit", "render"):
        result = vlkd_cli(command, "techer", "-f", str(EXAMPLES / "teacher.yaml"), env=empty_store)
        assert_one_line_error(result, "unknown stage 'techer'; did you mean 'teacher'? available: preprocess", 2)


def test_an_unknown_backend_is_a_usage_error_before_anything_runs(vlkd_cli, empty_store):
    pipeline = str(EXAMPLES / "pipeline.yaml")
    for command in (
        ["submit", "text", "-f", str(EXAMPLES / "text.yaml")],
        ["render", "text", "-f", str(EXAMPLES / "text.yaml")],
        ["pipeline", "run", pipeline],
        ["pipeline", "plan", pipeline],
        ["pipeline", "submit", pipeline],
    ):
        result = vlkd_cli(*command, "--backend", "lcoal", env=empty_store)
        assert_one_line_error(result, "unknown backend 'lcoal'; did you mean 'local'? available: local, ray, k8s", 2)
    assert_one_line_error(vlkd_cli("pipeline", "plan", pipeline, "-b", "slurm", env=empty_store), "available: local", 2)


def teacher_inputs(tmp_path: Path) -> ArtifactStore:
    """A store with the tiny teacher's tokenizer and features named `tiny`."""
    store = ArtifactStore.open((tmp_path / "store").as_uri())
    for kind in ("features", "tokenizer"):
        store.publish(kind, "tiny", collect_files([EXAMPLES / "teacher.yaml"]))
    return store


def test_submit_names_a_missing_input_and_the_close_one_before_anything_is_sent_or_uploaded(vlkd_cli, tmp_path):
    store = teacher_inputs(tmp_path)
    spec = tmp_path / "teacher.yaml"
    spec.write_text((EXAMPLES / "teacher.yaml").read_text().replace("features/tiny", "features/tiyn"))
    for backend in (["--backend", "local"], ["--backend", "ray", "--address", "http://127.0.0.1:1"]):
        result = vlkd_cli("submit", "teacher", "-f", str(spec), *backend, env={"VLKD_STORE": store.uri})
        assert_one_line_error(
            result, f"{spec}: features: features/tiyn:latest has no published version; did you mean features/tiny?"
        )
    assert list(store.storage.list("jobs")) == []  # the ray submission's spec was not uploaded
    assert vlkd_cli("list").stdout.count("vlkd-teacher") == 0


def test_render_defaults_to_the_local_backend_and_needs_no_store_nor_the_inputs(vlkd_cli, empty_store):
    rendered = vlkd_cli("render", "teacher", "-f", str(EXAMPLES / "teacher.yaml"), env=empty_store)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.splitlines()[1].startswith(
        f"python -m vlkd.jobs.teacher --spec {(EXAMPLES / 'teacher.yaml').resolve()}"
    )


def test_the_commands_that_send_a_pipeline_job_ask_which_cluster(vlkd_cli):
    for command in ("submit", "render"):
        result = vlkd_cli("pipeline", command, str(EXAMPLES / "pipeline.yaml"))
        assert_one_line_error(result, "Missing option '--backend' / '-b'.", 2)


def test_validate_prints_a_specs_errors_as_submit_does(vlkd_cli, tmp_path, empty_store):
    spec = tmp_path / "teacher.yaml"
    spec.write_text("stage: teacher\nname: t\nfeatures: corpus/x\ntokenizer: tokenizer/w\nmodel: {presett: tiny}\n")
    validated = vlkd_cli("validate", str(spec))
    submitted = vlkd_cli("submit", "teacher", "-f", str(spec), env=empty_store)
    assert validated.returncode == submitted.returncode == 2 and validated.stdout == ""
    assert validated.stderr == submitted.stderr
    assert validated.stderr.splitlines() == [
        f"error: {spec}: features: expected a features artifact ref (e.g. features/NAME:v1), got corpus/x:latest",
        f"error: {spec}: model.presett: unknown field; did you mean 'preset'?",
    ]


@pytest.fixture(scope="module")
def failed_job(vlkd_cli, synth_root, tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(a local text job that failed as it started: its corpus has no captions file, the environment that knows
    it). Module-wide: its own home, set up before each test's."""
    folder = tmp_path_factory.mktemp("failed-job")
    store = ArtifactStore.open((folder / "store").as_uri())
    store.publish("dataset", "synth-text", collect_files([synth_root / "text"]))
    spec = folder / "captions.yaml"
    spec.write_text((EXAMPLES / "text.yaml").read_text() + "format: captions\n")
    env = {"VLKD_STORE": store.uri, "HOME": str(folder / "home")}
    result = vlkd_cli("submit", "text", "-f", str(spec), "--wait", env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    return result.stdout.splitlines()[0], env


def test_status_of_a_failed_job_shows_its_error(vlkd_cli, failed_job):
    job_id, env = failed_job
    status = vlkd_cli("status", job_id, env=env).stdout.splitlines()
    assert status[0].split()[:2] == [job_id, "FAILED"]
    assert status[1].startswith("  error: dataset/synth-text:v1/captions.jsonl not found: format: captions reads")
    assert status[1].endswith("or use format: lines for a plain-text corpus")


def test_a_job_id_of_another_stage_is_refused_and_that_job_kept(vlkd_cli, failed_job, tmp_path):
    job_id, env = failed_job
    teacher_env = {**env, "VLKD_STORE": teacher_inputs(tmp_path).uri}
    result = vlkd_cli("submit", "teacher", "-f", str(EXAMPLES / "teacher.yaml"), "--job-id", job_id, env=teacher_env)
    assert_one_line_error(result, f"job {job_id} is a text job: a teacher job needs its own id (leave out --job-id)")
    assert vlkd_cli("status", job_id, env=env).stdout.split()[:2] == [job_id, "FAILED"]


def test_cancel_of_an_ended_job_says_it_had_ended(vlkd_cli, failed_job):
    job_id, env = failed_job
    result = vlkd_cli("cancel", job_id, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"job {job_id} had already ended (FAILED: exit code 1): nothing to cancel"


def test_logs_of_a_worker_the_job_lacks_is_an_error_that_says_which_workers_exist(vlkd_cli, failed_job):
    job_id, env = failed_job
    result = vlkd_cli("logs", job_id, "--worker", "5", env=env)
    assert_one_line_error(result, f"job {job_id} has no training worker 5: its log names no training workers")
    assert result.stdout == ""
