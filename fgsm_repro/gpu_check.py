"""`make gpu-check`: on whatever accelerator JAX sees, run the unit tests of the attacks and of
training, then train one fast-profile network, and print the device and the seconds per epoch.
Without an accelerator it says so and stops (exit 0): nothing to check on a CPU-only machine.

    python -m fgsm_repro.gpu_check [--tests-only]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_attacks.py", "tests/test_fgsm.py", "tests/test_train.py", "tests/test_seeds.py"]
FAST_TRAINING = ["configs/t2_maxout240.yaml", "--profile", "fast", "--training", "naive"]


def accelerator() -> tuple[str, list[str]] | None:
    """(platform, device kinds) of JAX's default backend when it is not the CPU; None on a CPU."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    return jax.default_backend(), [d.device_kind for d in jax.devices()]


def main(argv: list[str] | None = None) -> int:
    from fgsm_repro.runtime import Runtime

    Runtime.from_env().apply()
    found = accelerator()
    if found is None:
        import jax

        print(f"gpu-check: JAX sees no GPU or TPU here (devices: {', '.join(map(str, jax.devices()))}); "
              "nothing to check. With a CUDA GPU: `make install ACCEL=cuda`, then `make gpu-check`.")
        return 0
    platform, kinds = found
    print(f"gpu-check: JAX backend {platform}, devices {kinds}")
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow and not bench", *TESTS], cwd=REPO)
    if tests.returncode:
        print("gpu-check: the unit tests failed on this accelerator")
        return tests.returncode
    if "--tests-only" in (argv if argv is not None else sys.argv[1:]):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", "train", *FAST_TRAINING, "--run-dir",
                              f"{tmp}/run", "--quiet"], cwd=REPO)
        if run.returncode:
            return run.returncode
        record = json.loads(Path(tmp, "run", "run.json").read_text())
    seconds = time.perf_counter() - start
    print(f"gpu-check: {platform} {kinds[0]}: t2_maxout240 (fast, naive) trained {record['epochs_run']} epochs "
          f"in {seconds:.0f} s with start-up, {record['wall_time_s'] / max(record['epochs_run'], 1):.2f} s per "
          f"epoch (stage 2 included); test error {record['test_error']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
