"""Clean and adversarial evaluation of a trained model, batched and jitted."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from fgsm_repro import cpu_tuning
from fgsm_repro.attacks.common import Victim
from fgsm_repro.errors import ReproError
from fgsm_repro.metrics import perturbation_norms, summarize
from fgsm_repro.objectives import Objective
from fgsm_repro.sampling import Rate
from fgsm_repro.sharding import put_eval_batch, replicate, to_host

EVAL_BATCH = 2000
# Attacks that draw random numbers (PGD's start) get this key unless given one; batch i of the
# inputs, starting at example s, uses fold_in(key, s), so the examples do not depend on how many
# batches run at once.
ATTACK_KEY = 0
AttackFn = Callable[[Victim, jax.Array, jax.Array, jax.Array], jax.Array]


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_finite(x: np.ndarray, what: str = "inputs") -> None:
    if not np.all(np.isfinite(x)):
        raise ReproError(f"{what} contain NaN or infinite values")


def _placed(params, mesh: Mesh | None):
    """The parameters replicated over `mesh` (the evaluation batches are split across it)."""
    return params if mesh is None else replicate(params, mesh)


@functools.partial(cpu_tuning.jit_per_model, static_argnums=(0, 1))
def _logits(model: nn.Module, objective: Objective, params, x):
    logits = model.apply({"params": params}, x)
    return objective.predict(logits), objective.confidence(logits), logits


def predict(model: nn.Module, objective: Objective, params, x: np.ndarray, batch_size: int = EVAL_BATCH, *,
            mesh: Mesh | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted labels, confidence of the prediction, logits) for all of `x`; with a `mesh`,
    each batch is split across its devices."""
    params = _placed(params, mesh)
    outs = [_logits(model, objective, params, put_eval_batch(x[s], mesh)) for s in _batches(len(x), batch_size)]
    return tuple(np.concatenate([to_host(o[i]) for o in outs]) for i in range(3))


def victim(model: nn.Module, objective: Objective, params) -> Victim:
    """`model` with `params`, as the attacks see it."""
    def logits(x):
        return model.apply({"params": params}, x)

    return Victim(logits=logits, loss=lambda x, y: objective.loss(logits(x), y).sum(),
                  predict=lambda x: objective.predict(logits(x)), objective=objective)


def _targets(attack: AttackFn, victim_: Victim, x, y, key):
    """The classes a targeted attack steps toward on the batch (None: an untargeted attack): the
    labels given when `targeted`, else the attack spec's `target` (one class, a random other one or
    the least likely), drawn as the attack draws them."""
    if getattr(attack, "targeted", False):
        return y
    if getattr(attack, "target", None) is None:
        return None
    if getattr(attack, "labels", "true") == "predicted":
        y = victim_.predict(x)
    return attack.targets(victim_, x, y, key)


@functools.partial(cpu_tuning.jit_per_model, attack=True, static_argnums=(0, 1, 2))
def _attack_batch(model, objective, attack, params, x, y, key):
    victim_ = victim(model, objective, params)
    x_adv, details = attack.with_details(victim_, x, y, key) if hasattr(attack, "with_details") \
        else (attack(victim_, x, y, key), {})
    return x_adv, _targets(attack, victim_, x, y, key), details


def adversarial_examples(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray,
                         attack: AttackFn, batch_size: int = EVAL_BATCH, *, key: jax.Array | None = None,
                         mesh: Mesh | None = None) -> np.ndarray:
    """``attack(victim, x, y, key)`` — an attack spec (:mod:`fgsm_repro.attacks.base`), or any
    hashable pure function of that signature — applied to all of `x`, generated on `model` itself."""
    return _adversarial_and_targets(model, objective, params, x, y, attack, batch_size, key=key, mesh=mesh)[0]


def _adversarial_and_targets(model, objective, params, x, y, attack, batch_size=EVAL_BATCH, *, key=None, mesh=None):
    """The adversarial examples of all of `x`, the targets of a targeted attack (else None), and
    the attack's per-example details (``AttackSpec.with_details``) over all of `x`."""
    check_finite(x)
    params = _placed(params, mesh)
    key = jax.random.PRNGKey(ATTACK_KEY) if key is None else key
    limit = getattr(attack, "batch_size", lambda features: None)(int(np.prod(x.shape[1:])))
    batch_size = min(batch_size, limit or batch_size)  # e.g. JSMA's pair scores grow with the batch
    # Every batch dispatched before the first is read back: the host prepares the next while XLA runs.
    out = [_attack_batch(model, objective, attack, params, put_eval_batch(x[s], mesh), put_eval_batch(y[s], mesh),
                         jax.random.fold_in(key, s.start))
           for s in _batches(len(x), batch_size)]
    x_adv = np.concatenate([to_host(o[0]) for o in out])
    targeted = bool(out) and out[0][1] is not None
    details = {k: np.concatenate([to_host(o[2][k]) for o in out], axis=-1) for k in (out[0][2] if out else {})}
    return x_adv, np.concatenate([to_host(o[1]) for o in out]) if targeted else None, details


def evaluate(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray, *,
             mesh: Mesh | None = None) -> dict:
    """Error rate and confidences (percent) of `model` on (x, y)."""
    check_finite(x)
    pred, conf, _ = predict(model, objective, params, x, mesh=mesh)
    return summarize(pred, conf, y)


def attack_metrics(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray, attack: AttackFn, *,
                   mesh: Mesh | None = None, norms: bool = False) -> tuple[dict, np.ndarray]:
    """Metrics of `model` on the examples `attack` generates on it, and the examples. With
    `norms`, also the perturbation sizes (L0, L2, L∞) and the attack's seconds per example. A
    targeted attack adds ``target_hit``: the percentage of examples classified as their target."""
    start = time.perf_counter()
    x_adv, targets, details = _adversarial_and_targets(model, objective, params, x, y, attack, mesh=mesh)
    seconds = time.perf_counter() - start
    pred, confidence, _ = predict(model, objective, params, x_adv, mesh=mesh)
    metrics = summarize(pred, confidence, y)
    if details:
        metrics |= attack.summarize_details(details)
    if targets is not None:
        metrics["target_hit"] = Rate.of(pred == targets)
    if norms:  # the sizes of the perturbations that turned a right answer wrong
        fooled = (predict(model, objective, params, x, mesh=mesh)[0] == y) & (pred != y)
        metrics |= {"norms": perturbation_norms(x, x_adv, fooled), "seconds_per_example": seconds / max(len(x), 1)}
    return metrics, x_adv
