"""Clean and adversarial evaluation of a trained model, batched and jitted."""

from __future__ import annotations

import functools

import flax.linen as nn
import numpy as np

from fgsm_repro import cpu_tuning
from fgsm_repro.attacks import ATTACKS
from fgsm_repro.config import AttackConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.metrics import summarize
from fgsm_repro.objectives import Objective
from fgsm_repro.sharding import put_eval_batch, put_eval_params, to_host

EVAL_BATCH = 2000


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_finite(x: np.ndarray, what: str = "inputs") -> None:
    if not np.all(np.isfinite(x)):
        raise ReproError(f"{what} contain NaN or infinite values")


@functools.partial(cpu_tuning.jit_per_model, static_argnums=(0, 1))
def _logits(model: nn.Module, objective: Objective, params, x):
    logits = model.apply({"params": params}, x)
    return objective.predict(logits), objective.confidence(logits), logits


def predict(model: nn.Module, objective: Objective, params, x: np.ndarray,
            batch_size: int = EVAL_BATCH) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted labels, confidence of the prediction, logits) for all of `x`."""
    params = put_eval_params(params)
    outs = [_logits(model, objective, params, put_eval_batch(x[s])) for s in _batches(len(x), batch_size)]
    return tuple(np.concatenate([to_host(o[i]) for o in outs]) for i in range(3))


@functools.partial(cpu_tuning.jit_per_model, attack=True,
                   static_argnames=("model", "objective", "attack", "clip", "labels"))
def _attack_batch(model, objective, params, x, y, eps, *, attack, clip, labels):
    def loss_fn(x_, y_):
        return objective.loss(model.apply({"params": params}, x_), y_).sum()

    y_used = objective.predict(model.apply({"params": params}, x)) if labels == "predicted" else y
    return ATTACKS[attack](loss_fn, x, y_used, eps, clip=clip)


def adversarial_examples(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray,
                         attack: AttackConfig, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The attack of `attack` applied to all of `x`, generated on `model` itself."""
    check_finite(x)
    params = put_eval_params(params)
    # Every batch dispatched before the first is read back: the host prepares the next while XLA runs.
    out = [_attack_batch(model, objective, params, put_eval_batch(x[s]), put_eval_batch(y[s]), attack.eps,
                         attack=attack.name, clip=attack.clip, labels=attack.labels)
           for s in _batches(len(x), batch_size)]
    return np.concatenate([to_host(o) for o in out])


def evaluate(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray) -> dict:
    """Error rate and confidences (percent) of `model` on (x, y)."""
    check_finite(x)
    pred, conf, _ = predict(model, objective, params, x)
    return summarize(pred, conf, y)
