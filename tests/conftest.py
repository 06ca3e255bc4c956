"""Shared fixtures: a real S3 endpoint (moto server on loopback) and artifact stores on both backends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from vlkd.artifacts import ArtifactStore
from vlkd.runtime import alive, descendants

TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "vlkd-test",
    "AWS_SECRET_ACCESS_KEY": "vlkd-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}


DEVELOPER_ENV = dict(os.environ)
"""the environment pytest started with (xdist's workers inherit it unchanged: nothing below changes it at import):
what a test of a real cluster needs, its kubeconfig and cloud credentials"""

# The suite runs three test processes (pytest-xdist) and the jobs and Ray workers they start on the same cores, so
# torch's OpenMP threads outnumber the cores, and by default a waiting thread spins: three tiny BERT trainings at once
# on 2 cores took 187 CPU-s and 101 s with spinning threads, 43 CPU-s and 22 s with sleeping ones (PASSIVE). One
# thread per process does better still at the tests' sizes (100 steps of a 2-layer BERT, batch 32 x 32): alone
# 26.4 ms a step and 26.4 ms CPU, against 35.9 ms and 41.3 ms CPU with two sleeping threads; three at once 22.8
# CPU-s and 11.7 s, against 26.0 CPU-s and 13.2 s. Set before torch loads; every process a test starts inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# matplotlib (the reports' charts) keeps its font cache in the home directory, and is imported while the tests are
# collected, before any fixture gives them a home of their own: keep it out of the developer's.
os.environ.setdefault("MPLCONFIGDIR", str(Path(tempfile.gettempdir()) / "vlkd-tests-matplotlib"))


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` of a command a test interrupts as Ctrl-C does (SIGINT). A shell starts a background command
    (`make test &`, a CI runner's job) with SIGINT ignored, its children inherit that, and Python then installs no
    handler of its own, so the signal would be lost: give the command the default a terminal's command has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The longest files, started first: with `-n` (pytest-xdist, `--dist loadfile`) the others fill the other workers
# meanwhile, instead of one long file starting last and running alone.
FIRST = ("test_quickstart.py", "test_cluster_resume.py")
ON_RAY: set[Path] = set()
"""the test files that use the shared local Ray (`ray_session`)"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ON_RAY.update(item.path for item in items if "ray_session" in item.fixturenames)

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: within a file, the file's own order


# What would point a test at the developer's own store, cloud account, Ray cluster or Kubernetes cluster.
DEVELOPER_SETTINGS = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "VLKD_STORE",
    "VLKD_HOME",
    "RAY_ADDRESS",
    "KUBECONFIG",
)


def _isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for key in DEVELOPER_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    for key, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures (a job submitted once for a file's tests) run before a test's own
    environment is set up: they get a home of their own too, never the developer's (its `~/.vlkd/jobs` would list
    the tests' jobs). Set up before any other fixture of the session: autouse, and the widest scope."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see the developer's AWS profile, store, clusters or home directory, nor each other's home."""
    _isolate(monkeypatch, tmp_path_factory.mktemp("home"))


class _Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, with the service it finds for a host remembered: moto's own lists the ~150 folders of
    its package on every request to find it (a quarter of the server's CPU in the suite, which sends it tens of
    thousands of requests)."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self.services: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self.services:
            self.services[host] = super().get_backend_for_host(host)
        return self.services[host]


class _QuietRequestHandler(MotoRequestHandler):
    """Logs no line per request (werkzeug's does, at INFO: a tenth of the server's CPU); errors are still logged."""

    def log_request(self, *args: Any) -> None:
        pass


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port that refuses connections for the whole test. A port merely free when probed went, in one CI run, to
    another test's Ray dashboard before the connection; held bound but not listening, the kernel refuses for it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 at a free port, spoken to over HTTP like any S3 endpoint (STS too)."""
    server = make_server("127.0.0.1", 0, _Dispatcher(), threaded=True, request_handler=_QuietRequestHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    serving.join()


def _make_bucket(endpoint: str) -> str:
    bucket = f"vlkd-test-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def new_bucket(s3_endpoint: str) -> callable:
    """Make an empty bucket on the moto server; returns its name."""
    return lambda: _make_bucket(s3_endpoint)


@pytest.fixture(scope="session")
def make_store(request: pytest.FixtureRequest) -> callable:
    """Make a fresh, empty store on a backend, independent of the environment: for fixtures wider than a test."""

    def make(backend: str, folder: Path) -> ArtifactStore:
        if backend == "file":
            return ArtifactStore.open((folder / "store").as_uri())
        endpoint = request.getfixturevalue("s3_endpoint")
        return ArtifactStore.open(f"s3://{_make_bucket(endpoint)}/vlkd", endpoint_url=endpoint)

    return make


@pytest.fixture(params=["file", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty store root on each backend; for S3 a new bucket on the moto server."""
    if request.param == "file":
        return (tmp_path / "store").as_uri()
    endpoint = request.getfixturevalue("s3_endpoint")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return f"s3://{_make_bucket(endpoint)}/vlkd"


@pytest.fixture
def store(store_uri: str) -> ArtifactStore:
    return ArtifactStore.open(store_uri)


class CliRunner:
    """Runs `vlkd ARGS` as `subprocess.run([python, -m, vlkd.cli.main, ARGS], capture_output=True, text=True)`
    does, each in a process forked from one that has imported the command (tests/cli_server.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs = 0
        self.lock = threading.Lock()
        self.log = open(folder / "server.log", "w")  # noqa: SIM115 (the server's stderr, as long as it runs)
        self.server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("cli_server.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "vlkd.cli.main", *args]
        with self.lock:
            self.runs += 1
            out, err = self.folder / f"{self.runs}.out", self.folder / f"{self.runs}.err"
            out.touch()
            err.touch()
            request = {"args": list(args), "env": {**os.environ, **(env or {})}, "cwd": str(cwd or Path.cwd())}
            self.server.stdin.write(json.dumps({**request, "stdout": str(out), "stderr": str(err)}) + "\n")
            self.server.stdin.flush()
            answer = self.server.stdout.readline()
        if not answer:
            raise self._ended()
        pid, status = int(answer), Path(f"{out}.status")
        deadline, pause = time.monotonic() + timeout, 0.002
        while not status.exists():
            if self.server.poll() is not None:  # it writes the status: without it the wait would never end
                raise self._ended()
            if time.monotonic() > deadline and alive(pid):
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(command, timeout, out.read_text(), err.read_text())
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        code = os.waitstatus_to_exitcode(int(status.read_text()))
        done = subprocess.CompletedProcess(command, code, out.read_text(), err.read_text())
        for path in (out, err, status):
            path.unlink()
        return done

    def _ended(self) -> RuntimeError:
        return RuntimeError(f"the vlkd command server ended: see {self.folder / 'server.log'}")

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)
        self.server.stdout.close()
        self.log.close()


@pytest.fixture(scope="session")
def vlkd_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRunner]:
    """Run the installed `vlkd` command in a process of its own with the test's environment."""
    runner = CliRunner(tmp_path_factory.mktemp("cli"))
    yield runner
    runner.close()


@dataclass(frozen=True)
class QuickstartRun:
    """The session's one `vlkd quickstart`, on an S3 store as every cluster run has it."""

    store: str
    env: dict[str, str]
    """the environment of the CLI that ran it (its store's endpoint, its own home)"""
    workdir: Path
    first: subprocess.CompletedProcess

    def open_store(self) -> ArtifactStore:
        return ArtifactStore.open(self.store, endpoint_url=self.env["AWS_ENDPOINT_URL"])


@pytest.fixture(scope="session")
def quickstart(vlkd_cli, s3_endpoint, tmp_path_factory: pytest.TempPathFactory) -> QuickstartRun:
    """`vlkd quickstart` run once per session: the tests that only read what it made (its output, artifacts,
    logs, its teacher's grounding, a rerun's skips, an ablation on its stages) share it. Its first user's timeout
    must cover it (about 2.5 minutes on 2 quiet cores)."""
    root = tmp_path_factory.mktemp("quickstart")
    home = root / "home"
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "HOME": str(home), "VLKD_HOME": str(home / ".vlkd")}
    store = f"s3://{_make_bucket(s3_endpoint)}/quickstart"
    first = vlkd_cli("quickstart", "--workdir", str(root / "work"), "--store", store, env=env, timeout=1700)
    assert first.returncode == 0, first.stderr[-3000:]
    return QuickstartRun(store, env, root / "work", first)


@pytest.fixture(scope="module")
def ray_session() -> None:
    """A real local Ray, with more logical CPUs than cores so trainers, Ray Data tasks and actors never wait on each
    other (jobs call `ensure_ray`, which then reuses it). One Ray serves consecutive modules that use it: a module's
    own Ray cost its start and a new set of workers importing torch again (six such modules in one process: 486 and
    501 CPU-s with a Ray each, 456 and 424 sharing one). It stops when the next file does not use it
    (`pytest_runtest_teardown`): idle, its workers and Ray Data's actors cost about 5.5 CPU-s a minute."""
    import ray

    from vlkd.runtime import start_local_ray

    if not ray.is_initialized():
        start_local_ray(8, log_to_driver=False)  # as a job starts one; its processes inherit the test credentials


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Stop the shared local Ray (`ray_session`) after a file that uses it, unless the next test's file does too
    (pytest-xdist keeps a worker's next test known until its last). Not within a file: its module-scoped
    `ray_session` would not start it again."""
    yield
    if item.path in ON_RAY and (nextitem is None or nextitem.path not in ON_RAY):
        import ray

        ray.shutdown()


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset, made once per session (the generator is deterministic)."""
    from vlkd.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    config = SynthConfig(
        num_videos=6, max_seconds=6.0, corpus_paragraphs=300, task_train_examples=200, task_dev_examples=50
    )
    generate(root, config)
    return root


@pytest.fixture
def job_context(store: ArtifactStore, tmp_path: Path):
    from vlkd.runtime import JobContext

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return JobContext("vlkd-test-job", store, scratch)


SHORT_TRAINING = {
    "batch_size": 4,
    "max_steps": 8,
    "log_every": 4,
    "eval_every": 4,
    "checkpoint_every": 4,
    "val_size": 8,
}


@pytest.fixture(scope="module")
def populate(ray_session, synth_root):
    """Fill a store with the synthetic dataset and what the stages make of it, up to `upto` (features, text,
    teacher or students), with the demo pixel encoders and `tiny` models trained for a few steps."""
    from vlkd.artifacts import collect_files
    from vlkd.jobs import distill, preprocess, teacher, text
    from vlkd.runtime import JobContext
    from vlkd.specs import parse_spec

    order = ("data", "features", "text", "teacher", "students")

    def fill(store: ArtifactStore, folder: Path, upto: str) -> None:
        steps = order[: order.index(upto) + 1]

        def context(stage: str) -> JobContext:  # a job id per job: an id names one run (and its checkpoints)
            return JobContext(f"populate-{stage}", store, folder)

        for part, name in (
            ("videos", "videos"),
            ("text", "text"),
            ("tasks/sst2", "sst2"),
            ("tasks/mnli", "mnli"),
            ("tasks/glue_diagnostic", "glue_diagnostic"),
        ):
            store.publish("dataset", name, collect_files([synth_root / part]), attributes={"synthetic": True})
        if "features" in steps:
            encoders = {
                "encoder_2d": {"name": "pixels", "image_size": 32},
                "encoder_3d": {"name": "pixel-motion", "image_size": 32},
            }
            preprocess.run(
                parse_spec({"stage": "preprocess", "name": "synth", "videos": "dataset/videos", **encoders}),
                context("features"),
            )
        if "text" in steps:
            tokenizer = {"vocab_size": 300, "min_frequency": 1}
            spec = {
                "stage": "text",
                "name": "synth",
                "corpus": "dataset/text",
                "tokenizer": tokenizer,
                "max_len": 24,
                "val_size": 16,
            }
            text.run(parse_spec(spec), context("text"))
        common = {"model": "tiny", "resources": {"num_workers": 0}}
        if "teacher" in steps:
            spec = {
                "stage": "teacher",
                "name": "t",
                "features": "features/synth",
                "tokenizer": "tokenizer/synth",
                "max_text_len": 24,
            }
            teacher.run(parse_spec({**spec, **common, "train": {**SHORT_TRAINING, "val_size": 4}}), context("teacher"))
        if "students" in steps:
            base = {"stage": "distill", "corpus": "corpus/synth", "max_len": 24, "train": SHORT_TRAINING, **common}
            crd = {"crd": {"buffer_size": 64, "num_negatives": 16}}
            distill.run(
                parse_spec(
                    {**base, "name": "s-kd", "teacher": "teacher/t", "kd": {"nst": 1.0, "crd": 1.0}, "kd_options": crd}
                ),
                context("s-kd"),
            )
            distill.run(parse_spec({**base, "name": "s-base", "kd": {}}), context("s-base"))

    return fill


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GCS_PORT_FILE = "vlkd-test-gcs-port"
RAY_TEMP_FILE = "vlkd-test-ray-temp"


@contextlib.contextmanager
def running_ray_head(temp: Path) -> Iterator[str]:
    """A real Ray cluster head on 127.0.0.1 with its dashboard (the Job Submission API), stopped afterwards;
    yields the dashboard address. It is a stock head: its home has a token (`ray get-auth-token --generate`), so
    `ray start --head` turns token authentication on, as on any machine that has run Ray. While it runs, the
    token's file is RAY_AUTH_TOKEN_PATH in this process's environment, which the CLI's subprocesses inherit."""
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    # Ray's own folder is short: its socket paths must fit in 107 bytes, which a test's tmp path (longer under
    # pytest-xdist's popen-gwN) can exceed.
    ray_temp = tempfile.mkdtemp(prefix="vlkd-ray-", dir="/tmp")
    (temp / RAY_TEMP_FILE).write_text(ray_temp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")} | {"HOME": str(temp / "home")}
    subprocess.run([ray, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60, env=env)
    token = temp / "home" / ".ray" / "auth_token"
    try:
        for _ in range(3):  # a port picked free can be taken before Ray binds it: start again on new ones
            address = _start_head(ray, temp, Path(ray_temp), env, token.read_text().strip())
            if address:
                break
            _stop_processes_of(temp)
        else:
            agent_log = Path(ray_temp) / "session_latest" / "logs" / "dashboard_agent.log"
            tail = agent_log.read_text()[-3000:] if agent_log.is_file() else "(no agent log)"
            raise AssertionError(f"the Ray head's Job API did not come up in 3 starts; agent log:\n{tail}")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        yield address
    finally:
        _stop_processes_of(temp)
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        shutil.rmtree(ray_temp, ignore_errors=True)


def _start_head(ray: str, temp: Path, ray_temp: Path, env: dict[str, str], token: str) -> str | None:
    """Start the head and wait for its Job API: the dashboard answering and the job agent serving (an agent whose
    HTTP port is taken stays alive without it, and every submission then fails with "No available agent").
    Returns the dashboard address, or None if either did not come up."""
    port, dashboard = _free_port(), _free_port()
    (temp / GCS_PORT_FILE).write_text(str(port))  # how its stopper finds the processes that do not name `temp`
    command = [
        ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=8",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--temp-dir={ray_temp}",
        "--dashboard-agent-listen-port=0",  # the agent binds a free port itself: not Ray's fixed default
    ]  # fmt: skip
    if subprocess.run(command, capture_output=True, timeout=180, env=env).returncode != 0:
        return None
    from ray.job_submission import JobSubmissionClient

    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        agent_ports = [p.read_text().strip() for p in (ray_temp / "session_latest").glob("dashboard_agent_listen_*")]
        if "-1" in agent_ports:  # the agent wrote -1: its HTTP server (the job agent) failed
            return None
        with contextlib.suppress(Exception):
            JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
            if agent_ports:
                return address
        time.sleep(1)
    return None


def _stop_processes_of(temp: Path) -> None:
    """Stop this head's processes: those that name its temp dir or its GCS address on their command line, and
    everything they started (workers and agents rename themselves `ray::...`, so only their parentage says whose
    they are). Not `ray stop`, which stops every Ray on the machine, the test session's own included."""
    import signal

    gcs = f":{(temp / GCS_PORT_FILE).read_text()}" if (temp / GCS_PORT_FILE).is_file() else None
    names = [str(temp)] + ([(temp / RAY_TEMP_FILE).read_text()] if (temp / RAY_TEMP_FILE).is_file() else [])

    def members() -> set[int]:
        found = set()
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError):
                args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if any(
                    any(n in a for n in names) or (gcs and a.startswith("--address=") and a.endswith(gcs)) for a in args
                ):
                    found.add(int(proc.name))
        return found | descendants(found)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5  # then SIGKILL: some of them take 15 s or more to end on SIGTERM
        while any(alive(pid) for pid in members()) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture(scope="session")
def start_ray_head() -> Callable[[Path], contextlib.AbstractContextManager[str]]:
    """`with start_ray_head(temp_dir) as dashboard_address:` a Ray head of the test's own, beside any other Ray on
    the machine (its agent's port is a free one, not Ray's fixed default)."""
    return running_ray_head


@pytest.fixture(scope="session")
def stop_ray_head() -> Callable[[Path], None]:
    """Stop the head started with that temp dir (for a test of what outlives it; stopping twice is harmless)."""
    return _stop_processes_of
