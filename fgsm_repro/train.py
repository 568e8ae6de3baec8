"""The one training loop every experiment uses.

- ``train_step`` is pure; ``train_epoch`` runs a whole epoch inside one jitted ``lax.scan``
  over minibatches with the data resident on the device (no per-step Python overhead).
- The PRNG key lives in the train state: the seed fixes the initialization and the data
  order of every epoch, so a run resumed from a checkpoint continues exactly as it would have.
- ``fit`` adds early stopping on validation error (keeping the best parameters), a rich
  progress bar and orbax checkpoints every few epochs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from fgsm_repro.config import TrainConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import predict
from fgsm_repro.metrics import error_rate
from fgsm_repro.objectives import Objective
from fgsm_repro.optim import classical_momentum, decayed_learning_rate, linear_momentum, max_norm


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # split every epoch: the shuffle, and one key per step for dropout / noise


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Optax chain from the train config: [weight decay] → optimizer → [max-norm].

    Weight decay adds `weight_decay`·w to the gradient of the weights (an L2 penalty
    weight_decay/2·‖w‖²); biases are not decayed. Max-norm comes last, so that it constrains
    the parameters after the whole update.
    """
    opt = cfg.optimizer
    if opt.name == "sgd":
        base = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
    elif opt.name == "adam":
        base = optax.adam(opt.learning_rate)
    else:
        base = classical_momentum(
            decayed_learning_rate(opt.learning_rate, opt.lr_decay_factor, opt.min_learning_rate),
            linear_momentum(opt.momentum, opt.final_momentum, opt.momentum_saturate_epoch, steps_per_epoch))
    chain = [base]
    if cfg.weight_decay:
        weights_only = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
        chain.insert(0, optax.add_decayed_weights(cfg.weight_decay, mask=weights_only))
    if cfg.max_col_norm:
        chain.append(max_norm(cfg.max_col_norm))
    return optax.chain(*chain) if len(chain) > 1 else base


def init_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: np.ndarray, seed: int) -> TrainState:
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.asarray(sample_x[:1]))["params"]
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params), rng=data_key)


def make_loss_and_grad(model: nn.Module, objective: Objective, cfg: TrainConfig) -> Callable:
    """``(params, x, y, key) -> (loss, grads)`` of the training objective.

    Plain: J(θ, x, y) with dropout. Adversarial (§6): J̃ = α·J(x) + (1−α)·J(x + η) with
    η = ε·sign(∇ₓJ(x)) — ∇θ and ∇ₓ of the clean term come from one backward pass — or, for the
    noise controls, η = ±ε or U(−ε, ε) per pixel. η is a constant (no gradient flows through it).
    Each term draws its own dropout masks.
    """

    def loss(params, x, y, key):
        logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        cost = objective.loss(logits, y).mean()
        if cfg.l1:
            cost = cost + cfg.l1.coefficient * jnp.abs(params[cfg.l1.layer]["kernel"]).sum()
        return cost

    adv = cfg.adversarial
    if adv is None:
        def plain(params, x, y, key):
            return jax.value_and_grad(loss)(params, x, y, key)

        return plain

    def mixed(params, x, y, key):
        clean_key, adv_key, noise_key = jax.random.split(key, 3)
        clean_loss, (clean_grads, x_grad) = jax.value_and_grad(loss, argnums=(0, 1))(params, x, y, clean_key)
        if adv.perturbation == "fgsm":
            eta = adv.eps * jnp.sign(x_grad)
        elif adv.perturbation == "random_sign":
            eta = adv.eps * jax.random.rademacher(noise_key, x.shape, x.dtype)
        else:
            eta = jax.random.uniform(noise_key, x.shape, x.dtype, -adv.eps, adv.eps)
        adv_loss, adv_grads = jax.value_and_grad(loss)(params, jax.lax.stop_gradient(x + eta), y, adv_key)
        grads = jax.tree.map(lambda c, a: adv.alpha * c + (1 - adv.alpha) * a, clean_grads, adv_grads)
        return adv.alpha * clean_loss + (1 - adv.alpha) * adv_loss, grads

    return mixed


def make_train_epoch(model: nn.Module, objective: Objective, tx: optax.GradientTransformation,
                     cfg: TrainConfig) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """A jitted ``(state, x, y) -> (state, mean loss)`` for one shuffled epoch.

    The last incomplete minibatch is dropped (none is for the paper's 50k/60k with batch 100).
    """
    loss_and_grad = make_loss_and_grad(model, objective, cfg)
    batch_size = cfg.batch_size

    def train_step(state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        x, y, key = batch
        loss, grads = loss_and_grad(state.params, x, y, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state: TrainState, x: jax.Array, y: jax.Array):
        rng, shuffle_key = jax.random.split(state.rng)
        step_key = jax.random.fold_in(shuffle_key, 1)  # dropout / noise keys; the shuffle stays as it was
        n_batches = x.shape[0] // batch_size
        order = jax.random.permutation(shuffle_key, x.shape[0])[: n_batches * batch_size]
        batches = order.reshape(n_batches, batch_size)
        keys = jax.random.split(step_key, n_batches)
        state, losses = jax.lax.scan(lambda s, b: train_step(s, (x[b[0]], y[b[0]], b[1])),
                                     state.replace(rng=rng), (batches, keys))
        return state, losses.mean()

    return train_epoch


@dataclass
class FitResult:
    params: Any  # best-validation parameters with early stopping (then stage 2, if any), else the last
    epochs_run: int
    best_epoch: int  # 1-based; = epochs_run without early stopping
    best_val_error: float | None
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val_error (or val_objective)
    best_state: Any = None  # the whole train state at the best epoch (stage 2 continues from it)
    best_train_objective: float | None = None  # mean NLL on the training set at the best epoch
    stage2_epochs: int = 0
    retrain_epochs: int = 0  # epochs of the fresh run on train + validation (retrain_on_all)

    @property
    def seconds_per_epoch(self) -> float | None:
        """Median training time of a stage-1 epoch (the first, which compiles, excluded)."""
        times = [r["seconds"] for r in self.history if "epoch" in r and r["epoch"] > 1 and "seconds" in r]
        return float(np.median(times)) if times else None


class _Checkpointer:
    """Orbax checkpoints of (train state, best params, loop bookkeeping) in one directory."""

    def __init__(self, directory: Path, config_hash: str):
        self.config_hash = config_hash
        self.manager = ocp.CheckpointManager(
            Path(directory).resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))

    def restore(self, template: dict) -> tuple[dict, dict] | None:
        step = self.manager.latest_step()
        if step is None:
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
        meta = restored["meta"]
        if meta.get("config_hash") != self.config_hash:
            raise ReproError(f"{self.manager.directory} holds a checkpoint of another training config "
                             f"(hash {meta.get('config_hash')}, this one {self.config_hash}); delete that directory "
                             "to start over")
        return restored["state"], meta

    def save(self, epoch: int, arrays: dict, meta: dict) -> None:
        self.manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave({**meta, "config_hash": self.config_hash})))

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


MONITOR_KEY = 12345  # a fixed key: the monitored objective is the same whenever it is recomputed


def make_objective_monitor(model: nn.Module, objective: Objective, cfg: TrainConfig) -> Callable:
    """``(params, x, y) -> mean training objective`` over all of x, in minibatches of the training
    batch size, as pylearn2 monitors it: the training cost itself (dropout masks included, and the
    adversarial term when training adversarially), with fixed keys so that it is repeatable."""
    loss_and_grad = make_loss_and_grad(model, objective, cfg)
    size = cfg.batch_size

    @jax.jit
    def monitor(params, x, y):
        n = x.shape[0] // size
        batches = (x[: n * size].reshape(n, size, *x.shape[1:]), y[: n * size].reshape(n, size),
                   jax.random.split(jax.random.PRNGKey(MONITOR_KEY), n))
        return jax.lax.map(lambda b: loss_and_grad(params, *b)[0], batches).mean()

    return monitor


def _training_objective(monitor: Callable, params, x: np.ndarray, y: np.ndarray) -> float:
    return float(monitor(params, jnp.asarray(x), jnp.asarray(y)))


def _validation_error(model, objective, cfg: TrainConfig, params, x_val, y_val) -> float:
    if cfg.early_stopping_on == "error":
        return error_rate(predict(model, objective, params, x_val)[0], y_val)
    from fgsm_repro.config import AttackConfig
    from fgsm_repro.evaluation import adversarial_examples

    eps = cfg.adversarial.eps if cfg.adversarial else 0.25
    x_adv = adversarial_examples(model, objective, params, x_val, y_val, AttackConfig(eps=eps))
    return error_rate(predict(model, objective, params, x_adv)[0], y_val)


def fit(model: nn.Module, objective: Objective, cfg: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray | None, y_val: np.ndarray | None, seed: int, *, checkpoint_dir: Path | None = None,
        config_hash: str = "", on_epoch: Callable[[dict, Any], None] | None = None) -> FitResult:
    """Train `model` per `cfg`. With a `checkpoint_dir`, resumes from its latest checkpoint
    (a finished run is not trained further).

    Stage 1 trains on (x_train, y_train) with early stopping on the validation error (clean, or
    under FGSM with ``early_stopping_on: adversarial_error``) and keeps the best state. With
    ``cfg.stage2`` it then continues from that state on train + validation (:func:`_stage2`).

    `on_epoch(record, params)` is called after every epoch with the epoch's record (epoch,
    loss, val_error) and the current parameters (valid only during the call).
    """
    if (cfg.early_stopping_patience or cfg.stage2 or cfg.retrain_on_all) and (x_val is None or len(x_val) == 0):
        raise ReproError("early stopping, stage 2 and retraining need a validation set (data.validation_size > 0)")
    if len(x_train) < cfg.batch_size:
        raise ReproError(f"batch_size {cfg.batch_size} is larger than the training set ({len(x_train)})")
    steps_per_epoch = len(x_train) // cfg.batch_size
    tx = make_optimizer(cfg, steps_per_epoch)
    train_epoch = make_train_epoch(model, objective, tx, cfg)
    state = init_state(model, tx, x_train, seed)
    if cfg.l1 and cfg.l1.layer not in state.params:
        raise ReproError(f"train.l1.layer {cfg.l1.layer!r} is not a layer of {type(model).__name__}")
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)

    # A copy: train_epoch donates (frees) the buffers of the state it is given.
    best_state = jax.tree.map(jnp.copy, state)
    best_val, best_epoch, history, start, done = None, 0, [], 0, False
    ckpt = _Checkpointer(checkpoint_dir, config_hash) if checkpoint_dir else None
    if ckpt:
        restored = ckpt.restore({"state": state, "best_state": best_state})
        if restored:
            arrays, meta = restored
            state, best_state = arrays["state"], arrays["best_state"]
            best_val, best_epoch, history, start, done = (
                meta["best_val"], meta["best_epoch"], meta["history"], meta["epoch"], meta["done"])
    try:
        for epoch in range(start + 1, 0 if done else cfg.epochs + 1):
            tic = time.perf_counter()
            state, loss = train_epoch(state, x_dev, y_dev)
            record = {"epoch": epoch, "loss": float(loss), "seconds": round(time.perf_counter() - tic, 3)}
            if x_val is not None and len(x_val):
                record["val_error"] = _validation_error(model, objective, cfg, state.params, x_val, y_val)
                if best_val is None or record["val_error"] < best_val:
                    # A copy: the next train_epoch donates (frees) the buffers of `state`.
                    best_val, best_epoch, best_state = record["val_error"], epoch, jax.tree.map(jnp.copy, state)
            history.append(record)
            if on_epoch:
                on_epoch(record, state.params)
            stop = (cfg.early_stopping_patience is not None and epoch - best_epoch >= cfg.early_stopping_patience)
            done = stop or epoch == cfg.epochs
            if ckpt and (epoch % cfg.checkpoint_every == 0 or done):
                # Host copies: orbax writes in the background while the next epoch runs.
                ckpt.save(epoch, jax.device_get({"state": state, "best_state": best_state}),
                          {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                           "history": [dict(r) for r in history],  # a snapshot: orbax serializes it later
                           "done": done})
            if stop:
                break
    finally:
        if ckpt:
            ckpt.close()
    epochs_run = history[-1]["epoch"] if history else start
    if cfg.early_stopping_patience is None and not cfg.stage2:
        best_state, best_epoch = state, epochs_run
    result = FitResult(params=best_state.params, epochs_run=epochs_run, best_epoch=best_epoch,
                       best_val_error=best_val, history=history, best_state=best_state)
    if cfg.retrain_on_all:
        retrain_cfg = cfg.model_copy(update={"epochs": best_epoch, "early_stopping_patience": None,
                                             "retrain_on_all": False})
        retrained = fit(model, objective, retrain_cfg, np.concatenate([x_train, x_val]),
                        np.concatenate([y_train, y_val]), None, None, seed,
                        checkpoint_dir=checkpoint_dir.with_name(checkpoint_dir.name + "-retrain")
                        if checkpoint_dir else None, config_hash=config_hash, on_epoch=on_epoch)
        result.params, result.retrain_epochs = retrained.params, retrained.epochs_run
    if cfg.stage2:
        stage2_dir = checkpoint_dir.with_name(checkpoint_dir.name + "-stage2") if checkpoint_dir else None
        result = _stage2(model, objective, cfg, train_epoch, result, x_train, y_train, x_val, y_val, stage2_dir,
                         config_hash, on_epoch)
    return result


def _stage2(model, objective, cfg: TrainConfig, train_epoch, stage1: FitResult, x_train, y_train, x_val, y_val,
            checkpoint_dir: Path | None, config_hash: str, on_epoch) -> FitResult:
    """pylearn2's ``mnist_pi_continue``: from the best stage-1 state (parameters, optimizer state
    with its lr and momentum, PRNG), train on all of train + validation until the training
    objective on the former validation part falls to the training objective that the best stage-1
    parameters had on the training part, at most ``stage2.max_epochs`` epochs. Both objectives
    are the training cost as monitored by :func:`make_objective_monitor` (dropout included)."""
    monitor = make_objective_monitor(model, objective, cfg)
    target = _training_objective(monitor, stage1.best_state.params, x_train, y_train)
    state = jax.tree.map(jnp.copy, stage1.best_state)
    x_all, y_all = jnp.asarray(np.concatenate([x_train, x_val])), jnp.asarray(np.concatenate([y_train, y_val]))
    history, start, done = [], 0, False
    ckpt = _Checkpointer(checkpoint_dir, config_hash) if checkpoint_dir else None
    if ckpt:
        restored = ckpt.restore({"state": state})
        if restored:
            state, meta = restored[0]["state"], restored[1]
            history, start, done = meta["history"], meta["epoch"], meta["done"]
    try:
        for epoch in range(start + 1, 0 if done else cfg.stage2.max_epochs + 1):
            tic = time.perf_counter()
            state, loss = train_epoch(state, x_all, y_all)
            record = {"stage2_epoch": epoch, "loss": float(loss), "seconds": round(time.perf_counter() - tic, 3),
                      "val_objective": _training_objective(monitor, state.params, x_val, y_val)}
            history.append(record)
            if on_epoch:
                on_epoch(record, state.params)
            done = record["val_objective"] <= target or epoch == cfg.stage2.max_epochs
            if ckpt and (epoch % cfg.checkpoint_every == 0 or done):
                ckpt.save(epoch, jax.device_get({"state": state}),
                          {"epoch": epoch, "history": [dict(r) for r in history], "done": done})
            if done:
                break
    finally:
        if ckpt:
            ckpt.close()
    return FitResult(params=state.params, epochs_run=stage1.epochs_run, best_epoch=stage1.best_epoch,
                     best_val_error=stage1.best_val_error, history=stage1.history + history,
                     best_state=stage1.best_state, best_train_objective=target,
                     stage2_epochs=history[-1]["stage2_epoch"] if history else start)
