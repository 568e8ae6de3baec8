"""Several processes of one run (``FGSM_REPRO_DISTRIBUTED=1``, :func:`fgsm_repro.sharding.initialize_distributed`):
which one writes the run's files, and a barrier. Cheap to import: jax only when distributed."""

from __future__ import annotations

import os
from pathlib import Path

from fgsm_repro.errors import ReproError


def distributed() -> bool:
    return os.environ.get("FGSM_REPRO_DISTRIBUTED") == "1"


def writes_files() -> bool:
    """Whether this process writes the files of a run (the final checkpoint's swap into place,
    run.json, results, figures, the report): the only process, or process 0 of several. The others
    compute the same numbers and take part in every collective step, orbax's saves included."""
    if not distributed():
        return True
    import jax

    return jax.process_index() == 0


def sync(name: str) -> None:
    """Wait until every process gets here (several processes only)."""
    if distributed():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def require_data_parallel(data_parallel: bool, config: str | Path) -> None:
    """Several processes share a training run only by splitting its batches: otherwise each would
    train the whole model alone, and orbax cannot save such per-process parameters jointly."""
    if not distributed() or data_parallel:
        return
    import jax

    if jax.process_count() > 1:
        raise ReproError(f"{config}: {jax.process_count()} processes (FGSM_REPRO_DISTRIBUTED=1) share a run only "
                         "with `train: {data_parallel: true}` (or --data-parallel)")
