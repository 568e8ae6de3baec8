"""AutoAttack: a fixed sequence of diverse parameter-free attacks, each on the examples still robust.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 — the evaluation RobustBench standardised. Norm: L∞ or L2.

The standard sequence, in L∞ and in L2 alike (the reference's ``version="standard"``, each attack
in the sequence's norm): APGD-CE (100 steps, one start; :mod:`~fgsm_repro.attacks.apgd`), APGD-T
(targeted DLR toward 9 classes, 100 steps each; :mod:`~fgsm_repro.attacks.apgdt`), FAB-T (100
steps toward each of 9 classes, one start; :mod:`~fgsm_repro.attacks.fab`) and Square (5,000
queries, p_init = .8, one start; :mod:`~fgsm_repro.attacks.square`). An example fooled by a
stage keeps that stage's adversarial example; the robust accuracy can only fall from stage to
stage. Any attack specs may form the sequence instead (``stages:``).

Each stage runs only where some example is still robust: the batch is ordered robust-first and
cut into chunks of `chunk` examples, and a chunk with no robust example skips the stage (a
``lax.cond``), so a model that the first stage breaks costs little more than that stage.

Shapes: `x` is a batch (N, …) (Square needs images (N, H, W, C)); `y` has one label per example;
the result has the shape and dtype of `x`.

Usage::

    spec = parse_attack({"name": "autoattack", "eps": 0.3, "clip": [0, 1]})
    x_adv = spec(victim, x, y, key)
    parse_attack({"name": "autoattack", "eps": 1.5, "norm": 2, "clip": [0, 1]})   # the standard L2 sequence
    x_adv, robust = spec.stages_run(victim, x, y, key)   # robust: (stages + 1, N), clean first
    parse_attack({"name": "autoattack", "eps": 0.3, "stages": [{"name": "apgd", "loss": "dlr"}]})

Pure and traceable: composes with ``jax.jit``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field, SerializeAsAny, field_validator

from fgsm_repro.attacks.base import INF, AttackSpec, NonNegativeFloat, PositiveInt, find_attack, parse_attack
from fgsm_repro.sampling import Rate

STANDARD_LINF = ({"name": "apgd", "steps": 100}, {"name": "apgdt", "steps": 100, "target_classes": 9},
                 {"name": "fab", "steps": 100, "target_classes": 9},
                 {"name": "square", "queries": 5000, "p_init": 0.8})
STANDARD_L2 = STANDARD_LINF  # the reference's standard version sets the same for both norms


def on_robust(stage, x, y, robust, key, chunk: int):
    """``stage(x, y, key) -> x_adv`` on the robust examples only, `chunk` at a time (chunks with no
    robust example skipped): (x_adv where the stage ran, else x; the stage's examples for the
    robust ones)."""
    n = x.shape[0]
    chunk = min(chunk, n)
    order = jnp.argsort(~robust, stable=True)  # robust first
    pad = (-n) % chunk

    def chunked(a):
        a = a[order]
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
        return a.reshape((-1, chunk) + a.shape[1:])

    keys = jax.random.split(key, (n + pad) // chunk)

    def one(args):
        xc, yc, rc, kc = args
        return jax.lax.cond(rc.any(), lambda: stage(xc, yc, kc).astype(xc.dtype), lambda: xc)

    out = jax.lax.map(one, (chunked(x), chunked(y), chunked(robust), keys))
    out = out.reshape((-1,) + x.shape[1:])[:n]
    return jnp.zeros_like(out).at[order].set(out)


def _stage(stage: dict | AttackSpec, eps, norm, clip) -> AttackSpec:
    """A stage's spec with the sequence's eps, norm and clip where the attack has them."""
    if isinstance(stage, AttackSpec):
        stage = stage.model_dump()
    if not isinstance(stage, dict):
        raise ValueError("each stage is an attack's mapping, e.g. {name: apgd, steps: 100}")
    if stage.get("name") == "autoattack":
        raise ValueError("a stage cannot be autoattack itself")
    fields = find_attack(str(stage.get("name", "fgsm"))).model_fields
    shared = {"eps": eps, "norm": norm, "clip": clip}
    return parse_attack({**stage, **{k: v for k, v in shared.items() if k in fields}})


class AutoAttack(AttackSpec):
    """AutoAttack (:mod:`fgsm_repro.attacks.autoattack`): the standard sequence of attacks (APGD-CE,
    APGD-T, FAB-T, Square) in the L∞ or L2 (`norm`) ball of radius `eps`, or the attacks of
    `stages` (with this spec's eps, norm and clip), each on the examples still robust, `chunk`
    examples at a time."""

    name: Literal["autoattack"] = "autoattack"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    stages: tuple[SerializeAsAny[AttackSpec], ...] = Field((), validate_default=True)  # () : the standard sequence
    chunk: PositiveInt = 100

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, v, info):
        eps, norm, clip = info.data.get("eps", 0.0), info.data.get("norm", INF), info.data.get("clip")
        if v is None or v == ():
            v = STANDARD_LINF if norm == INF else STANDARD_L2
        if not isinstance(v, list | tuple):
            raise ValueError("stages: a list of attacks, e.g. [{name: apgd}, {name: square}]")
        return tuple(_stage(stage, eps, norm, clip) for stage in v)

    def standard(self) -> bool:
        return [s.model_dump() for s in self.stages] == [
            _stage(s, self.eps, self.norm, self.clip).model_dump()
            for s in (STANDARD_LINF if self.norm == INF else STANDARD_L2)]

    def describe(self) -> str:
        names = "+".join(s.name for s in self.stages)
        return f"autoattack eps={self.eps:g} norm={self.norm} {names}"

    def stages_run(self, victim, x, y, key):
        """(x̃, robust): the adversarial examples and, per example, whether it is still classified
        right — clean, then after each stage ((stages + 1, N) bool)."""
        robust = victim.predict(x) == y
        x_adv, after = x, [robust]
        for i, spec in enumerate(self.stages):
            def stage(xc, yc, kc, spec=spec):
                return spec(victim, xc, yc, kc)

            staged = on_robust(stage, x, y, robust, jax.random.fold_in(key, i), self.chunk)
            fooled = robust & (victim.predict(staged) != y)
            x_adv = jnp.where(fooled.reshape((-1,) + (1,) * (x.ndim - 1)), staged, x_adv)
            robust = robust & ~fooled
            after.append(robust)
        return jax.lax.stop_gradient(x_adv), jnp.stack(after)

    def perturb(self, victim, x, y, key):
        return self.stages_run(victim, x, y, key)[0]

    def with_details(self, victim, x, y, key):
        if self.labels == "predicted":
            y = victim.predict(x)
        x_adv, robust = self.stages_run(victim, x, y, key)
        return x_adv, {"robust": robust}

    def summarize_details(self, details: dict) -> dict:
        """``robust_after``: the robust accuracy (percent, with its sample) clean and after each
        stage, by the stage's name (a name repeated gets its position)."""
        names = ["clean"] + [s.name if [t.name for t in self.stages].count(s.name) == 1 else f"{i + 1}_{s.name}"
                             for i, s in enumerate(self.stages)]
        return {"robust_after": {name: Rate.of(row) for name, row in zip(names, np.asarray(details["robust"]),
                                                                         strict=True)}}
