import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The CLI's runtime (CPU tunings) without its compilation cache: the tests run the programs whose
# numbers results/ records, compiled afresh.
from fgsm_repro.runtime import Runtime  # noqa: E402

Runtime.from_env(compilation_cache=False).apply()

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FGSM_REPRO_SHARED_DATA", REPO.parent / "shared" / "data"))


def _prepared(name: str, offline_copy: Path) -> Path:
    """The TFDS data dir holding dataset `name` (`make data` prepares it; imported here from the
    offline copy if needed, skipped without one)."""
    from fgsm_repro.data import import_dataset
    from fgsm_repro.data.store import default_data_dir, resolve_name
    from fgsm_repro.errors import ReproError

    data_dir = default_data_dir()
    try:
        resolve_name(name, data_dir)
    except ReproError:
        if not offline_copy.exists():
            pytest.skip(f"{name} is not prepared: run `make data`")
        import_dataset(name, offline_copy, data_dir)
    return data_dir


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    return _prepared("mnist", SHARED_DATA / "mnist")


@pytest.fixture(scope="session")
def cifar_data_dir() -> Path:
    """CIFAR-10, or where only it exists, its JPEG copy."""
    return _prepared("cifar10", SHARED_DATA / "cifar10-jpeg" / "cifar10-jpeg.tar.gz")


@pytest.fixture
def no_jax_cache_env(monkeypatch) -> None:
    """Without JAX's own compilation-cache variables, which would override the CLI's settings."""
    for name in list(os.environ):
        if name.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "JAX_ENABLE_COMPILATION_CACHE")):
            monkeypatch.delenv(name)


def run_two_processes(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600,
                      returncode: int = 0) -> list[tuple[str, str]]:
    """`argv` started twice, as the two processes of one distributed run (jax.distributed over
    loopback, as if on two hosts); their (stdout, stderr), once both have exited with `returncode`.
    The outputs go to files, not pipes: an unread full pipe would stall one process, and the
    other with it at their next collective step."""
    import socket
    import subprocess
    import tempfile

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    streams = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]
    procs = [subprocess.Popen(argv, stdout=stdout, stderr=stderr, text=True, cwd=REPO,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {}), "FGSM_REPRO_DISTRIBUTED": "1",
                                   "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                                   "JAX_PROCESS_ID": str(i)})
             for i, (stdout, stderr) in enumerate(streams)]
    try:
        for p in procs:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            p.kill()
    done = []
    for p, files in zip(procs, streams, strict=True):
        for f in files:
            f.seek(0)
        stdout, stderr = (f.read() for f in files)
        assert p.returncode == returncode, stderr[-3000:]
        done.append((stdout, stderr))
    return done



def pytest_terminal_summary(terminalreporter):
    """How many cases the fuzz and property tests tried (hypothesis draws them afresh every run)."""
    from tests.helpers import FUZZ_COUNTS

    if FUZZ_COUNTS:
        terminalreporter.write_sep("-", "fuzz and property cases tried")
        for name, count in sorted(FUZZ_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {count}")
