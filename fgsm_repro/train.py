"""The one training loop every experiment uses.

- ``train_step`` is pure; ``train_epoch`` runs a whole epoch inside one jitted ``lax.scan``
  over minibatches with the data resident on the device (no per-step Python overhead).
- The PRNG key lives in the train state: the seed fixes the initialization and the data
  order of every epoch, so a run resumed from a checkpoint continues exactly as it would have.
- :func:`fit` adds early stopping on validation error (keeping the best parameters), a rich
  progress bar and orbax checkpoints every few epochs.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import struct

from fgsm_repro import cpu_tuning
from fgsm_repro.attacks.common import Victim
from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.checksums import tree_sha256
from fgsm_repro.config import TrainConfig
from fgsm_repro.data.augment import random_crop_flip
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import adversarial_examples, predict
from fgsm_repro.files import disk_problem, remove_orbax_temporaries
from fgsm_repro.locks import lock_folder
from fgsm_repro.metrics import error_rate
from fgsm_repro.objectives import Objective
from fgsm_repro.ops.dense import dense_product
from fgsm_repro.optim import (
    classical_momentum,
    decayed_learning_rate,
    linear_decay,
    linear_momentum,
    max_norm,
    scale_layers,
)
from fgsm_repro.processes import writes_files
from fgsm_repro.sharding import data_mesh, replicate, split_batch

AUGMENT_KEY = 7  # folded into a step's key for its augmentation
RUBBISH_KEY = 8  # folded into a step's key for its Gaussian rubbish draws


class TrainState(struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # split every epoch: the shuffle, and one key per step for dropout / noise


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Optax chain from the train config: [weight decay] → optimizer → [layer lr scales] → [max-norm].

    Weight decay adds `weight_decay`·w to the gradient of the weights (an L2 penalty
    weight_decay/2·‖w‖²); biases are not decayed. A layer's lr scale multiplies its updates: its
    learning rate. Max-norm comes last, so that it constrains the parameters after the whole update.
    """
    opt = cfg.optimizer
    if opt.name == "sgd":
        base = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
    elif opt.name == "adam":
        base = optax.adam(opt.learning_rate)
    else:
        lr = (linear_decay(opt.learning_rate, opt.linear_decay_to, opt.linear_decay_epochs, steps_per_epoch)
              if opt.linear_decay_to is not None else
              decayed_learning_rate(opt.learning_rate, opt.lr_decay_factor, opt.min_learning_rate))
        base = classical_momentum(
            lr, linear_momentum(opt.momentum, opt.final_momentum, opt.momentum_saturate_epoch, steps_per_epoch))
    chain = [base]
    if cfg.lr_scale:
        chain.append(scale_layers(cfg.lr_scale))
    if cfg.weight_decay:
        weights_only = functools.partial(jax.tree.map, lambda p: p.ndim > 1)
        chain.insert(0, optax.add_decayed_weights(cfg.weight_decay, mask=weights_only))
    if cfg.max_col_norm:
        chain.append(max_norm(cfg.max_col_norm))
    return optax.chain(*chain) if len(chain) > 1 else base


def init_state(model: nn.Module, tx: optax.GradientTransformation, sample_x: np.ndarray, seed: int) -> TrainState:
    init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.asarray(sample_x[:1]))["params"]
    if hasattr(model, "init_from_data"):  # e.g. the MP-DBM's visible biases: the training pixels' logits
        params = model.init_from_data(params, sample_x)
    return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params), rng=data_key)


def make_loss_and_grad(model: nn.Module, objective: Objective, cfg: TrainConfig) -> Callable:
    """``(params, x, y, key) -> (loss, grads)`` of the training objective.

    Plain: J(θ, x, y) with dropout, or the model's own ``training_cost(x, y)`` where it has one
    (a generative model's, e.g. :class:`fgsm_repro.mpdbm.MPDBM`). Adversarial (§6): J̃ = α·J(x) + (1−α)·J(x̃)
    with x̃ the training attack's examples: FGSM's x + ε·sign(∇ₓJ(x)) — ∇θ and ∇ₓ of the clean term
    come from one backward pass — or any attack's (PGD: Madry et al.), on the model with the clean
    term's dropout masks, or the noise controls' x ± ε or x + U(−ε, ε). x̃ is a constant (no gradient
    flows through it).
    Each term draws its own dropout masks. With ``rubbish`` (Appendix A), each term's batch gains
    Gaussian draws labelled "no class".
    """

    def loss(params, x, y, key):
        if cfg.rubbish:  # Gaussian draws labelled "no class", from a key of their own
            draws = jax.random.normal(jax.random.fold_in(key, RUBBISH_KEY), (cfg.rubbish.per_batch, *x.shape[1:]),
                                      x.dtype)
            x = jnp.concatenate([x, draws])
            y = jnp.concatenate([y, jnp.full((cfg.rubbish.per_batch,), cfg.rubbish.label, y.dtype)])
        if hasattr(model, "training_cost"):  # a model with a cost of its own (the MP-DBM's multi-prediction)
            cost = model.apply({"params": params}, x, y, rngs={"dropout": key}, method="training_cost").mean()
        else:
            cost = objective.loss(model.apply({"params": params}, x, train=True, rngs={"dropout": key}), y).mean()
        if cfg.l1:
            cost = cost + cfg.l1.coefficient * jnp.abs(params[cfg.l1.layer]["kernel"]).sum()
        return cost

    adv = cfg.adversarial
    if adv is None:
        def plain(params, x, y, key):
            return jax.value_and_grad(loss)(params, x, y, key)

        return plain
    attack = adv.training_attack()
    if adv.objective == "trades":
        return _trades_loss_and_grad(model, objective, cfg, attack)
    one_step = attack.from_gradient(jnp.zeros(1), jnp.zeros(1)) is not None  # FGSM: made from ∇ₓ J(x)

    def mixed(params, x, y, key):
        clean_key, adv_key, noise_key = jax.random.split(key, 3)
        if adv.alpha == 0 and not one_step:  # the clean term weighs nothing and makes nothing (Madry et al.)
            x_adv = attack(training_victim(model, objective, params, clean_key), x, y, noise_key)
            return jax.value_and_grad(loss)(params, jax.lax.stop_gradient(x_adv), y, adv_key)
        clean_loss, (clean_grads, x_grad) = jax.value_and_grad(loss, argnums=(0, 1))(params, x, y, clean_key)
        x_adv = attack.from_gradient(x, x_grad)  # FGSM: ∇ₓ of the clean term's own backward pass
        if x_adv is None:  # any other attack, on the model as it trains (the clean term's dropout masks)
            x_adv = attack(training_victim(model, objective, params, clean_key), x, y, noise_key)
        adv_loss, adv_grads = jax.value_and_grad(loss)(params, jax.lax.stop_gradient(x_adv), y, adv_key)
        grads = jax.tree.map(lambda c, a: adv.alpha * c + (1 - adv.alpha) * a, clean_grads, adv_grads)
        return adv.alpha * clean_loss + (1 - adv.alpha) * adv_loss, grads

    return mixed


def _log_probabilities(objective: Objective, logits):
    if objective.probabilities is None:
        raise ReproError("TRADES compares predicted distributions: the model's objective gives none")
    return jnp.log(jnp.clip(objective.probabilities(logits), 1e-12, 1.0))


def kl_divergence(objective: Objective, clean_logits, adv_logits):
    """(N,) KL(p(x) ‖ p(x̃)) between the predicted distributions of each example."""
    log_p, log_q = _log_probabilities(objective, clean_logits), _log_probabilities(objective, adv_logits)
    return (jnp.exp(log_p) * (log_p - log_q)).sum(-1)


def _trades_loss_and_grad(model: nn.Module, objective: Objective, cfg: TrainConfig, attack) -> Callable:
    """TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, ICML 2019, Alg. 1): J(x) + β·KL(p(x) ‖
    p(x̃)), both terms through the parameters; x̃ the attack's examples on KL(p(x) ‖ p(·)) from the
    clean prediction, the model in inference mode (their code's ``model.eval()``), a constant."""
    if cfg.rubbish or hasattr(model, "training_cost"):
        raise ReproError("train.adversarial.objective trades: not with rubbish training or a model's own cost")
    beta = cfg.adversarial.beta

    def loss_and_grad(params, x, y, key):
        clean_key, adv_key, attack_key = jax.random.split(key, 3)

        def logits(v):
            return model.apply({"params": params}, v)

        clean = jax.lax.stop_gradient(logits(x))
        on_kl = Victim(logits=logits, loss=lambda v, _: kl_divergence(objective, clean, logits(v)).sum(),
                       predict=lambda v: objective.predict(logits(v)), objective=objective)
        x_adv = jax.lax.stop_gradient(attack(on_kl, x, y, attack_key))

        def total(p):
            clean_logits = model.apply({"params": p}, x, train=True, rngs={"dropout": clean_key})
            adv_logits = model.apply({"params": p}, x_adv, train=True, rngs={"dropout": adv_key})
            cost = objective.loss(clean_logits, y).mean() + beta * kl_divergence(objective, clean_logits,
                                                                                 adv_logits).mean()
            return cost + (cfg.l1.coefficient * jnp.abs(p[cfg.l1.layer]["kernel"]).sum() if cfg.l1 else 0.0)

        return jax.value_and_grad(total)(params)

    return loss_and_grad


def training_victim(model: nn.Module, objective: Objective, params, key: jax.Array) -> Victim:
    """The model in training mode, as an attack that makes training examples sees it: dropout on,
    with the masks of `key` (the same at every step of an iterative attack)."""
    def logits(x):
        return model.apply({"params": params}, x, train=True, rngs={"dropout": key})

    return Victim(logits=logits, loss=lambda x, y: objective.loss(logits(x), y).sum(),
                  predict=lambda x: objective.predict(logits(x)), objective=objective)


def make_train_epoch(model: nn.Module, objective: Objective, tx: optax.GradientTransformation,
                     cfg: TrainConfig, *, seeds_together: bool = False) -> Callable:
    """A jitted ``(state, x, y) -> (state, mean loss)`` for one shuffled epoch.

    With ``cfg.data_parallel`` each minibatch is split across the devices (:mod:`fgsm_repro.sharding`).
    With ``seeds_together`` the state has a leading seed axis and every seed steps through its own
    epoch (its own shuffle and dropout masks) in one vmapped program over the same resident data.
    The last incomplete minibatch is dropped (none is for the paper's 50k/60k with batch 100).
    """
    batch_size = cfg.batch_size
    mesh = data_mesh(batch_size) if cfg.data_parallel else None
    # Split across devices, the kernels' gradients are all-reduced in the layout they are used in.
    step_model = model.clone(dot_general=dense_product) if mesh is not None and hasattr(model, "dot_general") else model
    loss_and_grad = make_loss_and_grad(step_model, objective, cfg)

    def train_step(state: TrainState, batch) -> tuple[TrainState, jax.Array]:
        x, y, key = batch
        if cfg.augment:  # its own key: the dropout masks stay those of the unaugmented step
            x = random_crop_flip(jax.random.fold_in(key, AUGMENT_KEY), x, cfg.augment.crop_pad, cfg.augment.flip)
        x, y = split_batch(x, mesh), split_batch(y, mesh)
        loss, grads = loss_and_grad(state.params, x, y, key)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss

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

    if seeds_together:
        train_epoch = jax.vmap(train_epoch, in_axes=(0, None, None))
    epoch = jax.jit(train_epoch, donate_argnums=0, compiler_options=cpu_tuning.compiler_options(model))
    if mesh is None:
        return epoch

    # The epoch returns the state replicated over the mesh; handed over that way from the first
    # call on (a no-op from the second), the epoch compiles once, not again on its second call.
    @functools.wraps(train_epoch)
    def on_mesh(state: TrainState, x: jax.Array, y: jax.Array):
        return epoch(replicate(state, mesh), x, y)

    on_mesh.lower = lambda state, x, y: epoch.lower(replicate(state, mesh), x, y)
    return on_mesh


def seeds_together_by_default() -> bool:
    """Several seeds in one vmapped program on accelerators; one after another on a CPU, where the
    benchmark (``ensemble12_epoch``) measured the vmapped epoch slower than the members in turn."""
    return jax.default_backend() != "cpu"


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
        """Median training time of a stage-1 epoch per model (the first, which compiles, excluded;
        an epoch of several seeds stepped together counts its share)."""
        times = [r["seconds"] / r.get("seeds_together", 1) for r in self.history
                 if "epoch" in r and r["epoch"] > 1 and "seconds" in r]
        return float(np.median(times)) if times else None


class _Checkpointer:
    """Orbax checkpoints of (train state, best params, loop bookkeeping) in one directory.

    The directory is locked while it is open (:mod:`fgsm_repro.locks`; another process waits its
    turn). Each checkpoint's bookkeeping (``meta``, saved in the same orbax step as the arrays, so
    that no kill can separate them) holds the sha256 of the arrays and itself. A checkpoint that
    cannot be restored or fails its checksum is removed and the one before resumed (the training
    is deterministic: the same run, some epochs later); none intact is a one-line error."""

    def __init__(self, directory: Path, config_hash: str):
        self.config_hash = config_hash
        directory = Path(directory).resolve()
        self._release = lock_folder(directory, wait=True)
        try:
            if writes_files():  # what a kill or a full disk left (the lock: nobody is writing there)
                remove_orbax_temporaries(directory)
            self.manager = ocp.CheckpointManager(
                directory, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
        except BaseException:
            self._release()
            raise

    def restore(self, template: dict) -> tuple[dict, dict] | None:
        damaged = []  # (step, why), newest first
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()))
                arrays, meta = restored["state"], restored["meta"]
                _check_meta(arrays, meta)
            except Exception as e:  # orbax raises many types for a damaged checkpoint
                damaged.append((step, _first_line(e)))
                continue
            if meta.get("config_hash") != self.config_hash:
                raise ReproError(f"{self.manager.directory} holds a checkpoint of another training config "
                                 f"(hash {meta.get('config_hash')}, this one {self.config_hash}); delete that "
                                 "directory to start over")
            if damaged:
                self._set_aside(damaged, step)
            return arrays, meta
        if damaged:  # none restores: damaged, or of another layout of the train state (a code change)
            step, why = damaged[0]
            raise ReproError(f"{self.manager.directory}: cannot restore its checkpoints, damaged or of another version "
                             f"of this code (step {step}: {why}); delete that directory (or train with --fresh) to "
                             "start over")
        return None

    def _set_aside(self, damaged: list[tuple[int, str]], step: int) -> None:
        """Delete the damaged checkpoints newer than `step`: their epochs are trained again."""
        try:
            for bad, _ in damaged:
                self.manager.delete(bad)
        except Exception as e:
            raise ReproError(f"{self.manager.directory}: cannot remove damaged checkpoint {bad} "
                             f"({_first_line(e)}); delete that directory (or train with --fresh) to start over"
                             ) from None
        if writes_files():
            print(f"warning: {self.manager.directory}: checkpoint {damaged[0][0]} cannot be restored "
                  f"({damaged[0][1]}); removed{f' with {len(damaged) - 1} more' if len(damaged) > 1 else ''}, "
                  f"resuming from checkpoint {step}", file=sys.stderr)

    def save(self, epoch: int, arrays: dict, meta: dict) -> None:
        meta = {**meta, "config_hash": self.config_hash}
        meta[CHECKSUM_KEY] = tree_sha256(arrays, meta)
        with self._disk_errors():
            self.manager.save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))

    def close(self) -> None:
        try:
            with self._disk_errors():
                self.manager.wait_until_finished()  # the last save's errors surface here
                self.manager.close()
        finally:
            self._release()

    @contextlib.contextmanager
    def _disk_errors(self):
        """A write the disk refused (full, read-only) is one line, and leaves no orbax temporaries."""
        try:
            yield
        except Exception as e:
            if (problem := disk_problem(e)) is None:
                raise
            with contextlib.suppress(Exception):
                self.manager.wait_until_finished()
            if writes_files():  # orbax's background writes may outlast the failed save
                remove_orbax_temporaries(self.manager.directory, settle_s=0.5)
            raise ReproError(f"cannot write a checkpoint in {self.manager.directory}: {problem}; the checkpoints "
                             "written before are kept: free some space and run the same command again to resume"
                             ) from None


CHECKSUM_KEY = "sha256"  # in a checkpoint's meta: tree_sha256 of its arrays and the rest of its meta


def _check_meta(arrays: dict, meta: Any) -> None:
    """A restored checkpoint is the one saved: its bookkeeping has what resuming reads, and the
    checksum (none in a checkpoint written before checksums were) matches."""
    if not isinstance(meta, dict) or not isinstance(meta.get("history"), list) or \
            not isinstance(meta.get("epoch"), int) or not isinstance(meta.get("done"), bool):
        raise ValueError("its bookkeeping (meta) is incomplete")
    expected = meta.get(CHECKSUM_KEY)
    if expected is not None and tree_sha256(arrays, {k: v for k, v in meta.items() if k != CHECKSUM_KEY}) != expected:
        raise ValueError("its arrays do not match their checksum")


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= limit else line[:limit - 1] + "…"


MONITOR_KEY = 12345  # a fixed key: the monitored objective is the same whenever it is recomputed


def make_objective_monitor(model: nn.Module, objective: Objective, cfg: TrainConfig) -> Callable:
    """``(params, x, y) -> mean training objective`` over all of x, in minibatches of the training
    batch size, as pylearn2 monitors it: the training cost itself (dropout masks included, and the
    adversarial term when training adversarially), with fixed keys so that it is repeatable."""
    loss_and_grad = make_loss_and_grad(model, objective, cfg)
    size = cfg.batch_size

    @functools.partial(jax.jit, compiler_options=cpu_tuning.compiler_options(model))
    def monitor(params, x, y):
        n = x.shape[0] // size
        batches = (x[: n * size].reshape(n, size, *x.shape[1:]), y[: n * size].reshape(n, size),
                   jax.random.split(jax.random.PRNGKey(MONITOR_KEY), n))
        return jax.lax.map(lambda b: loss_and_grad(params, *b)[0], batches).mean()

    return monitor


def _training_objective(monitor: Callable, params, x: np.ndarray, y: np.ndarray) -> float:
    return float(monitor(params, jnp.asarray(x), jnp.asarray(y)))


def _robust_error(model, objective, cfg: TrainConfig, params, x, y) -> float:
    """The error (percent) under the robust monitor's attack, the model in inference mode."""
    mesh = data_mesh() if cfg.data_parallel else None
    x_adv = adversarial_examples(model, objective, params, x, y, cfg.robust_monitor.attack, mesh=mesh)
    return float(error_rate(predict(model, objective, params, x_adv, mesh=mesh)[0], y))


def _validation_error(model, objective, cfg: TrainConfig, params, x_val, y_val) -> float:
    mesh = data_mesh() if cfg.data_parallel else None
    if cfg.early_stopping_on == "adversarial_error":
        attack = cfg.adversarial.validation_attack() if cfg.adversarial else FGSM(eps=0.25)
        x_val = adversarial_examples(model, objective, params, x_val, y_val, attack, mesh=mesh)
    # A plain float: a run resumed from its checkpoints reads it back as one, and must record the same.
    return float(error_rate(predict(model, objective, params, x_val, mesh=mesh)[0], y_val))


@dataclass
class _Run:
    """One seed's training loop: its state, the bookkeeping a checkpoint restores, and where it stops."""

    seed: int
    state: TrainState
    max_epochs: int
    ckpt: _Checkpointer | None = None
    best_state: TrainState | None = None
    best_val: float | None = None
    best_epoch: int = 0
    target: float | None = None  # stage 2: the training objective to reach
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    done: bool = False
    saved_epoch: int | None = None  # the epoch of its latest checkpoint (restored or written)

    def restore(self) -> None:
        """Continue from the latest checkpoint, if there is one."""
        if not self.ckpt:
            return
        template = {"state": self.state} | ({"best_state": self.best_state} if self.best_state is not None else {})
        try:
            restored = self.ckpt.restore(template)
        except BaseException:
            self.ckpt.close()  # and with it the run folder's lock
            raise
        if restored:
            arrays, meta = restored
            self.state, self.best_state = arrays["state"], arrays.get("best_state")
            self.best_val, self.best_epoch = meta.get("best_val"), meta.get("best_epoch", 0)
            self.history, self.epoch, self.done = meta["history"], meta["epoch"], meta["done"]
            self.saved_epoch = self.epoch

    def save(self, every: int) -> None:
        if self.ckpt and (self.epoch % every == 0 or self.done):
            arrays = {"state": self.state} | ({"best_state": self.best_state} if self.best_state is not None else {})
            # Host copies: orbax writes in the background while the next epoch runs.
            self.ckpt.save(self.epoch, jax.device_get(arrays),
                           {"epoch": self.epoch, "best_val": self.best_val, "best_epoch": self.best_epoch,
                            "history": [dict(r) for r in self.history],  # a snapshot: orbax serializes it later
                            "done": self.done})
            self.saved_epoch = self.epoch

    def diverged(self, epoch_name: str, loss: float, params_finite: bool) -> ReproError:
        """The one-line error for a non-finite epoch `self.epoch + 1` (not saved, nor counted)."""
        problem = f"the training loss is {loss}" if not np.isfinite(loss) else "the parameters became non-finite"
        if self.ckpt is None:
            kept = "no checkpoints are written (none to resume from)"
        elif self.saved_epoch is None:
            kept = f"no checkpoint written yet in {self.ckpt.manager.directory}"
        else:
            where = self.ckpt.manager.directory
            kept = f"the last good checkpoint ({epoch_name} {self.saved_epoch}) is kept in {where}"
        return ReproError(f"training diverged: {problem} at {epoch_name} {self.epoch + 1} (seed {self.seed}); {kept}; "
                          "check the data, or lower the learning rate (a new training)")


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.isfinite(a).all() for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


# Whether a run's parameters are all finite: one small reduction per epoch, fetched with the loss.
_params_finite = jax.jit(_all_finite)
_params_finite_per_seed = jax.jit(jax.vmap(_all_finite))  # the same for a leading seed axis


def _train_together(runs: list[_Run], model: nn.Module, objective: Objective, tx: optax.GradientTransformation,
                    cfg: TrainConfig, x, y, after_epoch: Callable[[_Run, float, dict], None], *,
                    epoch_name: str = "epoch", before_epoch: Callable[[_Run], None] | None = None) -> None:
    """Train every unfinished run an epoch at a time until all are done: one run on its own,
    several in one vmapped program (a finished run leaves the batch of seeds).

    An epoch whose mean training loss or resulting parameters are not finite stops the training
    with a one-line :class:`ReproError` naming it (`epoch_name` and number) before anything of it
    is recorded or saved: the checkpoints hold the last good epochs, to resume from. The other
    seeds of that epoch are recorded (and saved) first."""
    single, together = (functools.cache(lambda t=t: make_train_epoch(model, objective, tx, cfg, seeds_together=t))
                        for t in (False, True))
    try:
        while active := [r for r in runs if not r.done]:
            for run in active if before_epoch else ():
                before_epoch(run)
            tic = time.perf_counter()
            if len(active) == 1:
                state, loss = single()(active[0].state, x, y)
                states, losses, finite = [state], [loss], [_params_finite(state.params)]
            else:
                stacked, losses = together()(jax.tree.map(lambda *a: jnp.stack(a), *[r.state for r in active]), x, y)
                finite = _params_finite_per_seed(stacked.params)
                states = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(len(active))]
            losses, finite = jax.device_get((losses, finite))  # one transfer
            losses = np.asarray(losses, np.float64).reshape(-1)
            finite = np.asarray(finite, bool).reshape(-1)
            timing = {"seconds": round(time.perf_counter() - tic, 3)}
            if len(active) > 1:
                timing["seeds_together"] = len(active)
            diverged = []
            for run, state, loss, params_finite in zip(active, states, losses, finite, strict=True):
                if not (np.isfinite(loss) and params_finite):  # neither recorded nor saved
                    diverged.append(run.diverged(epoch_name, float(loss), bool(params_finite)))
                    continue
                run.state, run.epoch = state, run.epoch + 1
                after_epoch(run, float(loss), timing)
            if diverged:
                raise diverged[0]
    finally:
        for run in runs:
            if run.ckpt:
                run.ckpt.close()


class Data(NamedTuple):
    """Training data: the training split and, for early stopping and the second stages, a
    validation split (a :class:`fgsm_repro.data.Splits` serves as well)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class Trainer:
    """What trains: the model, its output objective, the train config, and how the optimizer is
    built from that config and the number of steps per epoch (the recipe's, by default)."""

    model: nn.Module
    objective: Objective
    train: TrainConfig
    optimizer: Callable[[TrainConfig, int], optax.GradientTransformation] = make_optimizer


@dataclass(frozen=True)
class Checkpoints:
    """Where each seed's orbax checkpoints go (``directory(seed)``; the second stages use sibling
    folders with ``-stage2`` / ``-retrain`` appended), and the `key` they belong to: a folder
    holding checkpoints of another key is refused rather than resumed."""

    directory: Callable[[int], Path]
    key: str


def fit(trainer: Trainer, data: Data, seeds: Sequence[int], *, checkpoints: Checkpoints | None = None,
        on_epoch: Callable[[dict, Any], None] | None = None,
        measure: Callable[[dict, Any], dict] | None = None) -> list[FitResult]:
    """Train ``trainer.model`` per ``trainer.train`` once per seed; one :class:`FitResult` per seed.

    Several seeds step together in one vmapped program (each with its own initialization, data
    order, dropout masks and early stopping — the same run as alone, up to float rounding). With
    `checkpoints`, each seed resumes from its latest checkpoint (a finished run is not trained
    further); they are the same whether a seed was trained alone or with others.

    Stage 1 trains on the training split with early stopping on the validation error (clean, or
    under FGSM with ``early_stopping_on: adversarial_error``) and keeps the best state. Then, with
    ``retrain_on_all``, a fresh run on train + validation for the best epoch count, or, with
    ``stage2``, :func:`_stage2` from the best state.

    `on_epoch(record, params)` is called after every epoch of every seed with the epoch's record
    (seed, epoch, loss, val_error) and that seed's current parameters (valid only during the call).
    `measure(record, params)` is called before it; what it returns joins the epoch's record in the
    history, so that numbers measured along the training survive a resumed run.
    """
    cfg = trainer.train
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    seeds = list(seeds)
    if (cfg.early_stopping_patience or cfg.stage2 or cfg.retrain_on_all) and (x_val is None or len(x_val) == 0):
        raise ReproError("early stopping, stage 2 and retraining need a validation set (data.validation_size > 0)")
    if len(x_train) < cfg.batch_size:
        raise ReproError(f"batch_size {cfg.batch_size} is larger than the training set ({len(x_train)})")
    dirs = [checkpoints.directory(seed) for seed in seeds] if checkpoints else [None] * len(seeds)
    key = checkpoints.key if checkpoints else ""
    on_epoch = _measuring(measure, on_epoch)
    results = _stage1(trainer, cfg, x_train, y_train, x_val, y_val, seeds, [cfg.epochs] * len(seeds), dirs, key,
                      on_epoch)
    if cfg.retrain_on_all:
        retrain_cfg = cfg.model_copy(update={"early_stopping_patience": None, "retrain_on_all": False})
        retrained = _stage1(trainer, retrain_cfg, np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]),
                            None, None, seeds, [r.best_epoch for r in results],
                            [d.with_name(d.name + "-retrain") if d else None for d in dirs], key, on_epoch,
                            epoch_name="retraining epoch")
        for result, fresh in zip(results, retrained, strict=True):
            result.params, result.retrain_epochs = fresh.params, fresh.epochs_run
    if cfg.stage2:
        results = _stage2(trainer, seeds, results, x_train, y_train, x_val, y_val,
                          [d.with_name(d.name + "-stage2") if d else None for d in dirs], key, on_epoch)
    return results


def _measuring(measure, on_epoch):
    """`on_epoch` for the stages: given the record as kept in the history, it adds `measure`'s
    numbers to it, then calls `on_epoch` with the seed beside them."""
    def callback(record: dict, seed: int, params) -> None:
        if measure:
            record.update(measure(record, params))
        if on_epoch:
            on_epoch({**record, "seed": seed}, params)
    return callback


def _stage1(trainer: Trainer, cfg: TrainConfig, x_train, y_train, x_val, y_val, seeds: list[int],
            epochs: list[int], dirs: list[Path | None], config_hash: str, on_epoch, *,
            epoch_name: str = "epoch") -> list[FitResult]:
    """Stage 1 of :func:`fit` with `cfg`: seed i trains for at most epochs[i] epochs (called
    `epoch_name` in a divergence error)."""
    model, objective = trainer.model, trainer.objective
    tx = trainer.optimizer(cfg, len(x_train) // cfg.batch_size)
    runs = []
    for seed, max_epochs, directory in zip(seeds, epochs, dirs, strict=True):
        state = init_state(model, tx, x_train, seed)
        named = {"train.l1.layer": [cfg.l1.layer] if cfg.l1 else [], "train.lr_scale": list(cfg.lr_scale),
                 "train.max_col_norm": list(cfg.max_col_norm) if isinstance(cfg.max_col_norm, dict) else []}
        for field_name, layers in named.items():
            if unknown := [layer for layer in layers if layer not in state.params]:
                raise ReproError(f"{field_name}: {', '.join(map(repr, unknown))} is not a layer of "
                                 f"{type(model).__name__} (its layers: {', '.join(state.params)})")
        # A copy: train_epoch donates (frees) the buffers of the state it is given.
        run = _Run(seed, state, max_epochs, _Checkpointer(directory, config_hash) if directory else None,
                   best_state=jax.tree.map(jnp.copy, state))
        run.restore()
        run.done = run.done or max_epochs == 0
        runs.append(run)
    validate = x_val is not None and len(x_val) > 0
    monitor = cfg.robust_monitor
    if monitor:  # a fixed held-out batch (the training split's start without a validation split)
        x_watch, y_watch = (x_val, y_val) if validate else (x_train, y_train)
        x_watch, y_watch = x_watch[:monitor.examples], y_watch[:monitor.examples]
    starts = {}  # seed -> the state its epoch started from, where a collapse sends training back

    def before_epoch(run: _Run) -> None:
        if monitor and monitor.stop_rise is not None:
            starts[run.seed] = jax.tree.map(jnp.copy, run.state)  # the next train_epoch donates run.state

    def after_epoch(run: _Run, loss: float, timing: dict) -> None:
        record = {"epoch": run.epoch, "loss": loss, **timing}
        collapsed = False
        if monitor:
            record["robust_error"] = _robust_error(model, objective, cfg, run.state.params, x_watch, y_watch)
            before = next((r["robust_error"] for r in reversed(run.history) if "robust_error" in r), None)
            collapsed = (monitor.stop_rise is not None and before is not None
                         and record["robust_error"] - before > monitor.stop_rise)
            if collapsed:  # catastrophic overfitting: keep the parameters the epoch started from
                record["collapsed"] = True
                run.state = starts[run.seed]
        if validate and (run.epoch % cfg.validate_every == 0 or run.epoch >= run.max_epochs or collapsed):
            record["val_error"] = _validation_error(model, objective, cfg, run.state.params, x_val, y_val)
            if run.best_val is None or record["val_error"] < run.best_val:
                # A copy: the next train_epoch donates (frees) the buffers of `run.state`.
                run.best_val, run.best_epoch = record["val_error"], run.epoch
                run.best_state = jax.tree.map(jnp.copy, run.state)
        on_epoch(record, run.seed, run.state.params)
        run.history.append(record)
        stop = cfg.early_stopping_patience is not None and run.epoch - run.best_epoch >= cfg.early_stopping_patience
        run.done = stop or collapsed or run.epoch >= run.max_epochs
        run.save(cfg.checkpoint_every)

    _train_together(runs, model, objective, tx, cfg, jnp.asarray(x_train), jnp.asarray(y_train), after_epoch,
                    epoch_name=epoch_name, before_epoch=before_epoch)
    results = []
    for run in runs:
        epochs_run = run.history[-1]["epoch"] if run.history else run.epoch
        if cfg.early_stopping_patience is None and not cfg.stage2:  # the last parameters are kept
            run.best_state, run.best_epoch = run.state, epochs_run
            run.best_val = run.history[-1].get("val_error") if run.history else run.best_val
        results.append(FitResult(params=run.best_state.params, epochs_run=epochs_run, best_epoch=run.best_epoch,
                                 best_val_error=run.best_val, history=run.history, best_state=run.best_state))
    return results


def _stage2(trainer: Trainer, seeds: list[int], stage1: list[FitResult], x_train, y_train, x_val, y_val,
            dirs: list[Path | None], config_hash: str, on_epoch) -> list[FitResult]:
    """pylearn2's ``mnist_pi_continue``: from the best stage-1 state (parameters, optimizer state
    with its lr and momentum, PRNG), train on all of train + validation until the training
    objective on the former validation part falls to the training objective that the best stage-1
    parameters had on the training part, at most ``stage2.max_epochs`` epochs. Both objectives
    are the training cost as monitored by :func:`make_objective_monitor` (dropout included)."""
    model, objective, cfg = trainer.model, trainer.objective, trainer.train
    monitor = make_objective_monitor(model, objective, cfg)
    tx = trainer.optimizer(cfg, len(x_train) // cfg.batch_size)  # the stage-1 schedules run on
    runs = []
    for seed, result, directory in zip(seeds, stage1, dirs, strict=True):
        run = _Run(seed, jax.tree.map(jnp.copy, result.best_state), cfg.stage2.max_epochs,
                   _Checkpointer(directory, config_hash) if directory else None,
                   target=_training_objective(monitor, result.best_state.params, x_train, y_train))
        run.restore()
        runs.append(run)

    def after_epoch(run: _Run, loss: float, timing: dict) -> None:
        record = {"stage2_epoch": run.epoch, "loss": loss, **timing,
                  "val_objective": _training_objective(monitor, run.state.params, x_val, y_val)}
        on_epoch(record, run.seed, run.state.params)
        run.history.append(record)
        run.done = record["val_objective"] <= run.target or run.epoch >= run.max_epochs
        run.save(cfg.checkpoint_every)

    x_all, y_all = jnp.asarray(np.concatenate([x_train, x_val])), jnp.asarray(np.concatenate([y_train, y_val]))
    _train_together(runs, model, objective, tx, cfg, x_all, y_all, after_epoch, epoch_name="stage-2 epoch")
    return [FitResult(params=run.state.params, epochs_run=s1.epochs_run, best_epoch=s1.best_epoch,
                      best_val_error=s1.best_val_error, history=s1.history + run.history, best_state=s1.best_state,
                      best_train_objective=run.target,
                      stage2_epochs=run.history[-1]["stage2_epoch"] if run.history else run.epoch)
            for s1, run in zip(stage1, runs, strict=True)]
