"""The process's runtime, built once and applied before any work: CPU tunings, JAX's persistent
compilation cache, and several processes. Importing any module of the package changes nothing
global; the CLI applies :meth:`Runtime.from_env` first (with it, orbax's reports of the failures
the CLI turns into one line stay off the terminal), and a script can do the same::

    from fgsm_repro.runtime import Runtime
    Runtime.from_env().apply()   # before JAX starts its backend

The environment variables it reads, in one place:

- ``FGSM_REPRO_CPU_TUNING``: ``1`` (default: all), ``0`` or a list of :data:`fgsm_repro.cpu_tuning.NAMES`;
- ``FGSM_REPRO_JAX_CACHE``: the compilation cache's folder (default ``~/.cache/fgsm-repro/jax``), or ``off``;
- ``FGSM_REPRO_DISTRIBUTED=1``: this process is one of several (:mod:`fgsm_repro.sharding`).

(``FGSM_REPRO_RUNS_DIR``, where checkpoints go, is the run context's default:
:class:`fgsm_repro.experiments.common.Context`.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fgsm_repro import cpu_tuning, orbax_noise


@dataclass(frozen=True)
class Runtime:
    cpu_tunings: frozenset[str] = frozenset(cpu_tuning.NAMES)
    compilation_cache: Path | None = None  # None: no persistent cache
    distributed: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, compilation_cache: bool = True) -> Runtime:
        """The runtime the environment asks for (a bad value is a one-line ReproError)."""
        where = environ.get("FGSM_REPRO_JAX_CACHE") or str(Path.home() / ".cache" / "fgsm-repro" / "jax")
        return cls(cpu_tunings=cpu_tuning.parse(environ.get("FGSM_REPRO_CPU_TUNING")),
                   compilation_cache=Path(where) if compilation_cache and where.lower() != "off" else None,
                   distributed=environ.get("FGSM_REPRO_DISTRIBUTED") == "1")

    def apply(self) -> None:
        """Put the runtime in place; before JAX starts its backend (XLA_FLAGS is read then)."""
        if self.compilation_cache is not None:
            # JAX's own variables, read when jax is first imported. Every program is cached: JAX's
            # default skips those compiling in under a second, which here is nearly all of them.
            os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(self.compilation_cache))
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        cpu_tuning.configure(self.cpu_tunings)
        orbax_noise.quiet_orbax()
        if self.distributed:
            from fgsm_repro.sharding import initialize_distributed

            initialize_distributed()
