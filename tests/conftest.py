import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FGSM_REPRO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """The TFDS data dir holding MNIST (`make data` prepares it; imported here if needed)."""
    from fgsm_repro.data import import_dataset
    from fgsm_repro.data.store import default_data_dir, resolve_name
    from fgsm_repro.errors import ReproError

    data_dir = default_data_dir()
    try:
        resolve_name("mnist", data_dir)
    except ReproError:
        if not (SHARED_DATA / "mnist").is_dir():
            pytest.skip("MNIST is not prepared: run `make data`")
        import_dataset("mnist", SHARED_DATA / "mnist", data_dir)
    return data_dir


@pytest.fixture
def no_jax_cache_env(monkeypatch) -> None:
    """Without JAX's own compilation-cache variables, which would override the CLI's settings."""
    for name in list(os.environ):
        if name.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "JAX_ENABLE_COMPILATION_CACHE")):
            monkeypatch.delenv(name)
