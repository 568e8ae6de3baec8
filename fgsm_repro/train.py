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

from fgsm_repro.config import OptimizerConfig, TrainConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import predict
from fgsm_repro.metrics import error_rate
from fgsm_repro.objectives import Objective


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # consumed for each epoch's shuffle (and, later, dropout masks)


def make_optimizer(opt: OptimizerConfig, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Optax chain from the config. Weight decay adds `weight_decay`·w to the gradient of the
    weights (an L2 penalty weight_decay/2·‖w‖²); biases are not decayed."""
    if opt.name == "sgd":
        base = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
    else:
        base = optax.adam(opt.learning_rate)
    if weight_decay == 0:
        return base
    weights_only = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=weights_only), base)


def init_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: np.ndarray, seed: int) -> TrainState:
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.asarray(sample_x[:1]))["params"]
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params), rng=data_key)


def make_train_epoch(model: nn.Module, objective: Objective, tx: optax.GradientTransformation,
                     batch_size: int) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """A jitted ``(state, x, y) -> (state, mean loss)`` for one shuffled epoch.

    The last incomplete minibatch is dropped (none is for the paper's 50k/60k with batch 100).
    """

    def loss_fn(params, x, y):
        return objective.loss(model.apply({"params": params}, x, train=True), y).mean()

    def train_step(state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(state.params, x, y)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss

    @functools.partial(jax.jit, donate_argnums=0)
    def train_epoch(state: TrainState, x: jax.Array, y: jax.Array):
        rng, shuffle_key = jax.random.split(state.rng)
        n_batches = x.shape[0] // batch_size
        order = jax.random.permutation(shuffle_key, x.shape[0])[: n_batches * batch_size]
        batches = order.reshape(n_batches, batch_size)
        state, losses = jax.lax.scan(lambda s, idx: train_step(s, (x[idx], y[idx])), state.replace(rng=rng), batches)
        return state, losses.mean()

    return train_epoch


@dataclass
class FitResult:
    params: Any  # best-validation parameters with early stopping, else the last ones
    epochs_run: int
    best_epoch: int  # 1-based; = epochs_run without early stopping
    best_val_error: float | None
    history: list[dict] = field(default_factory=list)  # per epoch: loss, val_error


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


def fit(model: nn.Module, objective: Objective, cfg: TrainConfig, x_train: np.ndarray, y_train: np.ndarray,
        x_val: np.ndarray | None, y_val: np.ndarray | None, seed: int, *, checkpoint_dir: Path | None = None,
        config_hash: str = "", on_epoch: Callable[[dict, Any], None] | None = None) -> FitResult:
    """Train `model` per `cfg`. With a `checkpoint_dir`, resumes from its latest checkpoint
    (a finished run is not trained further).

    `on_epoch(record, params)` is called after every epoch with the epoch's record (epoch,
    loss, val_error) and the current parameters (valid only during the call).
    """
    if cfg.early_stopping_patience and (x_val is None or len(x_val) == 0):
        raise ReproError("early stopping needs a validation set (data.validation_size > 0)")
    if len(x_train) < cfg.batch_size:
        raise ReproError(f"batch_size {cfg.batch_size} is larger than the training set ({len(x_train)})")
    tx = make_optimizer(cfg.optimizer, cfg.weight_decay)
    train_epoch = make_train_epoch(model, objective, tx, cfg.batch_size)
    state = init_state(model, tx, x_train, seed)
    x_dev, y_dev = jnp.asarray(x_train), jnp.asarray(y_train)

    # A copy: train_epoch donates (frees) the buffers of the state it is given.
    best_params = jax.tree.map(jnp.copy, state.params)
    best_val, best_epoch, history, start, done = None, 0, [], 0, False
    ckpt = _Checkpointer(checkpoint_dir, config_hash) if checkpoint_dir else None
    if ckpt:
        restored = ckpt.restore({"state": state, "best_params": best_params})
        if restored:
            arrays, meta = restored
            state, best_params = arrays["state"], arrays["best_params"]
            best_val, best_epoch, history, start, done = (meta["best_val"], meta["best_epoch"], meta["history"],
                                                          meta["epoch"], meta["done"])
    try:
        for epoch in range(start + 1, 0 if done else cfg.epochs + 1):
            state, loss = train_epoch(state, x_dev, y_dev)
            record = {"epoch": epoch, "loss": float(loss)}
            if x_val is not None and len(x_val):
                record["val_error"] = error_rate(predict(model, objective, state.params, x_val)[0], y_val)
                if best_val is None or record["val_error"] < best_val:
                    # A copy: the next train_epoch donates (frees) the buffers of `state`.
                    best_val, best_epoch, best_params = record["val_error"], epoch, jax.tree.map(jnp.copy, state.params)
            history.append(record)
            if on_epoch:
                on_epoch(record, state.params)
            stop = (cfg.early_stopping_patience is not None and epoch - best_epoch >= cfg.early_stopping_patience)
            done = stop or epoch == cfg.epochs
            if ckpt and (epoch % cfg.checkpoint_every == 0 or done):
                # Host copies: orbax writes in the background while the next epoch runs.
                ckpt.save(epoch, jax.device_get({"state": state, "best_params": best_params}),
                          {"epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                           "history": [dict(r) for r in history],  # a snapshot: orbax serializes it later
                           "done": done})
            if stop:
                break
    finally:
        if ckpt:
            ckpt.close()
    epochs_run = history[-1]["epoch"] if history else start
    if cfg.early_stopping_patience is None:
        best_params, best_epoch = state.params, epochs_run
    return FitResult(params=best_params, epochs_run=epochs_run, best_epoch=best_epoch,
                     best_val_error=best_val, history=history)
