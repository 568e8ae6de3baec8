"""The PyTorch side of the benchmark, and all of its PyTorch code: the project's networks and
recipes in eager PyTorch, written the way a PyTorch user would write them, torchattacks for the
attacks, and the calls that a workload times (:func:`epoch_calls`, :func:`attack_calls`).
Benchmark-only: torch and torchattacks are not dependencies of fgsm-repro (``make bench``
installs them); the rest of the benchmark imports this module only when it runs the PyTorch side."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from fgsm_repro.bench.timing import time_call

if TYPE_CHECKING:
    from fgsm_repro.config import TrainConfig


class MPDBM(torch.nn.Module):
    """:class:`fgsm_repro.mpdbm.MPDBM`'s multi-prediction training cost in PyTorch: the same
    binarisation, targets, mean-field sweeps (the doubled first pass, the label starting at
    softmax(b²)) and cost, written with ``F.linear`` on each layer's weights both ways."""

    def __init__(self, units: tuple[int, int] = (2087, 3200), visible: int = 784, num_classes: int = 10,
                 steps: int = 14, weight_init: float = 0.00638830865761):
        super().__init__()
        self.steps = steps
        self.hidden0 = torch.nn.Linear(visible, units[0])
        self.hidden1 = torch.nn.Linear(*units)
        self.label = torch.nn.Linear(units[1], num_classes)
        self.visible_bias = torch.nn.Parameter(torch.zeros(visible))
        _recipe_init(self.layers(), weight_init)  # the timing does not depend on the sparse initialisation

    def named_layers(self) -> dict[str, torch.nn.Linear]:
        return {"hidden0": self.hidden0, "hidden1": self.hidden1, "label": self.label}

    def layers(self) -> list[torch.nn.Linear]:
        return list(self.named_layers().values())

    def cost(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per example, on intensities x (N, D) and labels y (N,): a binary sample of x, and each
        pixel and label a target with probability ½."""
        v = torch.bernoulli(x.flatten(1))
        return self.cost_of(v, (torch.rand_like(v) < 0.5).to(v.dtype), (torch.rand(len(v)) < 0.5).to(v.dtype), y)

    def cost_of(self, v: torch.Tensor, free: torch.Tensor, label_free: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per example, given the binary pixels v (N, D), which are targets (`free`, N × D; `label_free`, N)."""
        w0, b0, w1, b1 = self.hidden0.weight, self.hidden0.bias, self.hidden1.weight, self.hidden1.bias
        w2, b2, bv = self.label.weight, self.label.bias, self.visible_bias
        label_free = label_free[:, None]
        one_hot = F.one_hot(y, w2.shape[0]).to(v.dtype)
        state = free * torch.sigmoid(bv).detach() + (1 - free) * v
        h0 = torch.sigmoid(F.linear(2 * state, w0, b0))
        h1 = torch.sigmoid(F.linear(2 * h0, w1, b1))
        c = label_free * torch.softmax(b2, -1) + (1 - label_free) * one_hot
        h1 = torch.sigmoid(F.linear(h0, w1, b1) + c @ w2)
        for _ in range(self.steps - 1):
            h0 = torch.sigmoid(F.linear(state, w0, b0) + h1 @ w1)
            z_c = F.linear(h1, w2, b2)
            z_v = h0 @ w0 + bv
            state = free * torch.sigmoid(z_v) + (1 - free) * v
            h1 = torch.sigmoid(F.linear(h0, w1, b1) + (label_free * torch.softmax(z_c, -1) + (1 - label_free) * one_hot)
                               @ w2)
        pixel_ce = F.binary_cross_entropy_with_logits(z_v, v, reduction="none")
        label_nll = F.cross_entropy(z_c, y, reduction="none")
        return ((free * pixel_ce).sum(-1) + label_free[:, 0] * label_nll) / v.shape[-1]


@torch.no_grad()
def _recipe_init(layers, weight_init: float) -> None:
    """The recipe's initialization: weights U(−weight_init, weight_init), zero biases."""
    for layer in layers:
        layer.weight.uniform_(-weight_init, weight_init)
        layer.bias.zero_()


class Maxout(torch.nn.Module):
    """:class:`fgsm_repro.models.MaxoutMLP` in PyTorch: contiguous pieces, U(−r, r) weights, zero
    biases, unscaled input dropout and scaled hidden dropout."""

    def __init__(self, units: int, pieces: int = 5, layers: int = 2, num_classes: int = 10, in_features: int = 784,
                 weight_init: float = 0.005, input_keep: float = 0.8, hidden_keep: float = 0.5):
        super().__init__()
        self.units, self.pieces, self.input_keep, self.hidden_keep = units, pieces, input_keep, hidden_keep
        dims = [in_features] + [units] * layers
        self.maxout = torch.nn.ModuleList(torch.nn.Linear(d, units * pieces) for d in dims[:-1])
        self.softmax = torch.nn.Linear(units, num_classes)
        _recipe_init(self.layers(), weight_init)

    def layers(self) -> list[torch.nn.Linear]:
        return [*self.maxout, self.softmax]

    def forward(self, x):
        h = x.flatten(1)
        if self.training and self.input_keep < 1:
            h = h * (torch.rand_like(h) < self.input_keep)
        for i, layer in enumerate(self.maxout):
            if i:
                h = F.dropout(h, 1 - self.hidden_keep, self.training)
            h = layer(h).view(h.shape[0], self.units, self.pieces).amax(-1)
        return self.softmax(F.dropout(h, 1 - self.hidden_keep, self.training))

    @torch.no_grad()
    def load_flax(self, params) -> Maxout:
        """Copy the parameters of a Flax MaxoutMLP (kernels are (in, out); torch weights (out, in))."""
        names = [f"maxout{i}" for i in range(len(self.maxout))] + ["softmax"]
        for layer, name in zip(self.layers(), names, strict=True):
            layer.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
        return self


class MeanProbabilityEnsemble(torch.nn.Module):
    """:class:`fgsm_repro.models.MeanProbabilityEnsemble` in PyTorch: log of the members' mean
    softmax probabilities, so that a cross-entropy on it (torchattacks') is −log mean p(y | x)."""

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x):
        log_probs = torch.stack([F.log_softmax(m(x), dim=-1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


class ConvMaxout(torch.nn.Module):
    """:class:`fgsm_repro.models.ConvMaxout` in PyTorch (NCHW): conv maxout over contiguous channel
    groups, VALID max-pools, a maxout and a softmax layer, the same dropout."""

    def __init__(self, channels=(96, 192, 192), pieces: int = 2, kernels=(8, 8, 5), pads=(4, 3, 3),
                 pools=((4, 2), (4, 2), (2, 2)), units: int = 500, unit_pieces: int = 5, num_classes: int = 10,
                 in_channels: int = 3, image_size: int = 32, weight_init: float = 0.005, input_keep: float = 0.8,
                 hidden_keep: float = 0.5):
        super().__init__()
        self.pieces, self.unit_pieces, self.units, self.pools = pieces, unit_pieces, units, pools
        self.input_keep, self.hidden_keep = input_keep, hidden_keep
        convs, size, c_in = [], image_size, in_channels
        for c, k, p, (window, stride) in zip(channels, kernels, pads, pools, strict=True):
            convs.append(torch.nn.Conv2d(c_in, c * pieces, k, padding=p))
            size, c_in = ((size + 2 * p - k + 1) - window) // stride + 1, c
        self.convs = torch.nn.ModuleList(convs)
        self.maxout = torch.nn.Linear(size * size * c_in, units * unit_pieces)
        self.softmax = torch.nn.Linear(units, num_classes)
        _recipe_init(self.layers(), weight_init)

    def layers(self) -> list[torch.nn.Module]:
        return [*self.convs, self.maxout, self.softmax]

    def named_layers(self) -> dict[str, torch.nn.Module]:
        """The layers by their names in the Flax model (conv0…, maxout, softmax)."""
        return {**{f"conv{i}": conv for i, conv in enumerate(self.convs)}, "maxout": self.maxout,
                "softmax": self.softmax}

    def forward(self, x):
        h = x * (torch.rand_like(x) < self.input_keep) if self.training and self.input_keep < 1 else x
        for i, (conv, (window, stride)) in enumerate(zip(self.convs, self.pools, strict=True)):
            if i:
                h = F.dropout(h, 1 - self.hidden_keep, self.training)
            z = conv(h)
            h = z.view(z.shape[0], -1, self.pieces, *z.shape[2:]).amax(2)
            h = F.max_pool2d(h, window, stride)
        h = F.dropout(h.permute(0, 2, 3, 1).flatten(1), 1 - self.hidden_keep, self.training)  # NHWC order, as Flax
        h = self.maxout(h).view(h.shape[0], self.units, self.unit_pieces).amax(-1)
        return self.softmax(F.dropout(h, 1 - self.hidden_keep, self.training))

    @torch.no_grad()
    def load_flax(self, params) -> ConvMaxout:
        """Copy a Flax ConvMaxout's parameters (conv kernels HWIO → OIHW, dense (in, out) → (out, in))."""
        for i, conv in enumerate(self.convs):
            conv.weight.copy_(torch.from_numpy(np.asarray(params[f"conv{i}"]["kernel"]).transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(np.asarray(params[f"conv{i}"]["bias"]).copy()))
        for layer, name in ((self.maxout, "maxout"), (self.softmax, "softmax")):
            layer.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
        return self


class Recipe:
    """The recipe's update by hand: classical momentum v ← m·v − lr·g (lr divided by
    `lr_decay_factor` per update, or with `linear_decay` = (fraction, epochs) falling linearly per
    epoch to lr·fraction; momentum rising linearly over epochs), each layer's update times its
    `lr_scales` factor, then the weights' column norms capped at `max_col_norm` (or each named
    layer's at its own `max_col_norms` limit) — the chain of :func:`fgsm_repro.train.make_optimizer`.
    Layer names are the Flax model's (``named_layers``)."""

    def __init__(self, model: Maxout | ConvMaxout | MPDBM, steps_per_epoch: int, learning_rate: float = 0.1,
                 lr_decay_factor: float = 1.000004, min_learning_rate: float = 1e-6, momentum: float = 0.5,
                 final_momentum: float = 0.7, momentum_saturate_epoch: int = 250,
                 max_col_norm: float | None = 1.9365, *,
                 linear_decay: tuple[float, int] | None = None, lr_scales: dict[str, float] | None = None,
                 max_col_norms: dict[str, float] | None = None):
        named = model.named_layers() if lr_scales or max_col_norms else {}
        # Parameters grouped by the factor on their updates: one fused update per group.
        scale_of = {id(p): lr_scales[name] for name, layer in named.items() if name in (lr_scales or {})
                    for p in layer.parameters()}
        self.params = list(model.parameters())
        self.groups = [(scale, [i for i, p in enumerate(self.params) if scale_of.get(id(p), 1.0) == scale])
                       for scale in sorted({scale_of.get(id(p), 1.0) for p in self.params})]
        self.limits = ([(named[name].weight, limit) for name, limit in max_col_norms.items()] if max_col_norms
                       else [(layer.weight, max_col_norm) for layer in model.layers()] if max_col_norm is not None
                       else [])
        self.velocity = [torch.zeros_like(p) for p in self.params]
        self.steps_per_epoch, self.count = steps_per_epoch, 0
        self.lr, self.log_decay, self.min_lr = learning_rate, math.log(lr_decay_factor), min_learning_rate
        self.linear_decay = linear_decay
        self.m0, self.m1, self.saturate = momentum, final_momentum, momentum_saturate_epoch

    @classmethod
    def from_config(cls, model: Maxout | ConvMaxout | MPDBM, cfg: TrainConfig, steps_per_epoch: int) -> Recipe:
        """The update that `cfg` (its optimizer classical momentum) makes, on `model`."""
        opt, per_layer = cfg.optimizer, isinstance(cfg.max_col_norm, dict)
        if opt.name != "classical_momentum":
            raise ValueError(f"the PyTorch recipe is classical momentum, not {opt.name}")
        return cls(model, steps_per_epoch, opt.learning_rate, opt.lr_decay_factor, opt.min_learning_rate, opt.momentum,
                   opt.momentum if opt.final_momentum is None else opt.final_momentum,
                   opt.momentum_saturate_epoch or 2,  # without one the momentum is constant: any epoch will do
                   None if per_layer else cfg.max_col_norm,
                   linear_decay=None if opt.linear_decay_to is None else (opt.linear_decay_to, opt.linear_decay_epochs),
                   lr_scales=cfg.lr_scale, max_col_norms=cfg.max_col_norm if per_layer else None)

    def learning_rate(self, epoch: int) -> float:
        if self.linear_decay is None:
            return max(self.lr * math.exp(-self.count * self.log_decay), self.min_lr)
        fraction, epochs = self.linear_decay
        return self.lr * (1 - (1 - fraction) * min(max((epoch - 1) / max(epochs - 1, 1), 0.0), 1.0))

    @torch.no_grad()
    def step(self) -> None:
        epoch = self.count // self.steps_per_epoch + 1
        lr = self.learning_rate(epoch)
        m = self.m0 + (self.m1 - self.m0) * min(max((epoch - 1) / (self.saturate - 1), 0.0), 1.0)
        torch._foreach_mul_(self.velocity, m)
        torch._foreach_add_(self.velocity, [p.grad for p in self.params], alpha=-lr)
        for scale, members in self.groups:
            torch._foreach_add_([self.params[i] for i in members], [self.velocity[i] for i in members], alpha=scale)
        for w, limit in self.limits:  # a torch weight's rows (filters) are the Flax kernel's columns
            w.copy_(torch.renorm(w, 2, 0, limit))
        self.count += 1


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """:func:`fgsm_repro.data.augment.random_crop_flip` on an NCHW batch: each image replaced by
    its window at a random offset of the zero-padded image, mirrored with probability 1/2 — by
    indexing the whole batch at once, as a PyTorch user would, not image by image."""
    n, c, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1))
        rows, cols = dy + torch.arange(h), dx + torch.arange(w)
        x = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                   rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        x = torch.where((torch.rand(n) < 0.5)[:, None, None, None], x.flip(3), x)
    return x


def pgd_examples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                 step_size: float) -> torch.Tensor:
    """PGD as Madry et al.'s training code makes its examples, eagerly: a uniform start in the L∞
    ball, `steps` signed-gradient steps of the cross-entropy, each projected onto the ball and [0, 1];
    the model in whatever mode it is in (training: dropout on, new masks every pass)."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def train_epoch(model: Maxout | ConvMaxout | MPDBM, recipe: Recipe, x: torch.Tensor, y: torch.Tensor,
                batch_size: int = 100,
                adversarial: tuple[float, float] | None = None, shuffle: bool = True,
                augment: tuple[int, bool] | None = None, pgd: tuple[float, int, float] | None = None) -> float:
    """One epoch of minibatch SGD; with ``adversarial=(alpha, eps)`` the objective
    α·J(x) + (1−α)·J(x + ε·sign ∇ₓJ(x)), ∇θ and ∇ₓ of the clean term from one backward pass; with
    ``pgd=(eps, steps, step_size)`` J on each minibatch's :func:`pgd_examples` alone (Madry et al.);
    with ``augment=(pad, flip)`` each minibatch randomly cropped and flipped first."""
    model.train()
    order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
    n_batches = len(x) // batch_size
    total = torch.zeros(())
    for i in range(n_batches):
        idx = order[i * batch_size:(i + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        if augment:
            xb = random_crop_flip(xb, *augment)
        if pgd:
            xb = pgd_examples(model, xb, yb, *pgd)
        model.zero_grad(set_to_none=True)
        if adversarial:
            alpha, eps = adversarial
            xb.requires_grad_(True)
            clean = F.cross_entropy(model(xb), yb)
            (alpha * clean).backward()  # α∇θJ and (the sign of) ∇ₓJ in one pass
            adv = F.cross_entropy(model((xb + eps * xb.grad.sign()).detach()), yb)
            ((1 - alpha) * adv).backward()  # accumulates into the parameter gradients
            loss = alpha * clean.detach() + (1 - alpha) * adv.detach()
        else:
            loss = model.cost(xb, yb).mean() if hasattr(model, "cost") else F.cross_entropy(model(xb), yb)
            loss.backward()
        recipe.step()
        total += loss.detach()
    return float(total) / max(n_batches, 1)


def cw_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, c: float, steps: int, lr: float) -> torch.Tensor:
    """Carlini–Wagner L2 with one constant `c` and `steps` Adam steps, every step run (torchattacks.CW
    stops once the batch's cost rises at a tenth of its steps, so its amount of work varies): the
    tanh box [0, 1], the untargeted margin max(Z_y − max_{i≠y} Z_i, 0), the best successful
    example kept per image — as :func:`fgsm_repro.attacks.cw.cw_l2` with one search step."""
    w = torch.atanh((x * 2 - 1) * 0.999999).detach().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    best, best_l2 = x.clone(), torch.full((len(x),), float("inf"))
    one_hot = F.one_hot(y, 10).bool()
    for _ in range(steps):
        x_adv = (torch.tanh(w) + 1) / 2
        logits = model(x_adv)
        other = logits.masked_fill(one_hot, float("-inf")).amax(1)
        margin = logits.gather(1, y[:, None])[:, 0] - other
        l2 = (x_adv - x).flatten(1).square().sum(1)
        with torch.no_grad():
            better = (margin <= 0) & (l2.sqrt() < best_l2)
            best_l2 = torch.where(better, l2.sqrt(), best_l2)
            best[better] = x_adv[better]
        opt.zero_grad()
        (l2.sum() + c * margin.clamp(min=0).sum()).backward()
        opt.step()
    return best


# --- the calls a workload times -------------------------------------------------------------------

def twin(model) -> torch.nn.Module:
    """A freshly initialised PyTorch counterpart of `model`, a Flax network of fgsm_repro
    (:class:`~fgsm_repro.models.MaxoutMLP`, :class:`~fgsm_repro.models.ConvMaxout` or
    :class:`~fgsm_repro.mpdbm.MPDBM`) of the same sizes."""
    from fgsm_repro import models, mpdbm

    if isinstance(model, models.ConvMaxout):
        return ConvMaxout(model.channels, units=model.units)
    if isinstance(model, mpdbm.MPDBM):
        return MPDBM(model.units, model.visible, model.num_classes, model.steps, model.weight_init)
    if isinstance(model, models.MaxoutMLP):
        return Maxout(model.units)
    raise TypeError(f"no PyTorch counterpart of {type(model).__name__}")


def torchattack(model: torch.nn.Module, spec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The attack of `spec` (an attack spec of the project, as the benchmark runs it) in
    torchattacks, with the spec's settings: FGSM, PGD (L∞ or L2, random start), DeepFool (L2), APGD,
    Square, JSMA toward the least likely class and AutoAttack's standard sequence
    (:func:`standard_autoattack`).
    Carlini–Wagner L2 (one constant) is :func:`cw_l2`: torchattacks.CW stops early when the cost
    rises, so its amount of work varies."""
    import torchattacks

    norm = getattr(spec, "norm", None)
    match spec.name:
        case "fgsm":
            return torchattacks.FGSM(model, eps=spec.eps)
        case "pgd" if norm == "inf":
            return torchattacks.PGD(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                                    random_start=spec.random_start)
        case "pgd" if norm == 2:
            return torchattacks.PGDL2(model, eps=spec.eps, alpha=spec.step_size, steps=spec.steps,
                                      random_start=spec.random_start)
        case "deepfool" if norm == 2:
            return torchattacks.DeepFool(model, steps=spec.max_iter, overshoot=spec.overshoot)
        case "cw" if spec.binary_search_steps == 1:
            return functools.partial(cw_l2, model, c=spec.initial_const, steps=spec.steps, lr=spec.learning_rate)
        case "apgd":
            return torchattacks.APGD(model, norm="Linf" if norm == "inf" else "L2", eps=spec.eps, steps=spec.steps,
                                     n_restarts=spec.restarts, loss=spec.loss, seed=0)
        case "square" if spec.restarts == 1:
            return torchattacks.Square(model, norm="Linf" if norm == "inf" else "L2", eps=spec.eps,
                                       n_queries=spec.queries, n_restarts=1, p_init=spec.p_init, seed=0)
        case "jsma" if spec.target == "least_likely":
            attack = torchattacks.JSMA(model, theta=spec.theta, gamma=spec.gamma)
            attack.set_mode_targeted_least_likely()
            return attack
        case "autoattack" if spec.standard():
            return standard_autoattack(model, spec)
    raise ValueError(f"no PyTorch counterpart of {spec.describe()}")


def standard_autoattack(model: torch.nn.Module, spec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """AutoAttack's standard sequence as the reference runs it (fra31/auto-attack, version
    "standard": APGD-CE, APGD-T and FAB-T of 100 steps, Square of 5,000 queries), built from
    torchattacks' attacks in its MultiAttack (each on the images still robust), for 10 classes.
    torchattacks.AutoAttack(version="standard") leaves APGD, APGD-T and FAB at their 10-step
    defaults: a tenth of the reference's work, and a weaker attack."""
    import torchattacks

    stages = {s.name: s for s in spec.stages}
    shared = dict(eps=spec.eps, norm="Linf" if spec.norm == "inf" else "L2", seed=0, n_restarts=1)
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, loss="ce", steps=stages["apgd"].steps, **shared),
        torchattacks.APGDT(model, steps=stages["apgdt"].steps, n_classes=10, **shared),
        torchattacks.FAB(model, steps=stages["fab"].steps, multi_targeted=True, n_classes=10, **shared),
        torchattacks.Square(model, n_queries=stages["square"].queries, p_init=stages["square"].p_init, **shared),
    ])


def _start(threads: int | None) -> None:
    """Each workload's PyTorch side starts from the same random state, on `threads` threads."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)


def _tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """NHWC images as NCHW (what torchattacks and torch's convolutions expect), labels as int64."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()


def epoch_calls(model, members: int, cfg: TrainConfig, x: np.ndarray, y: np.ndarray,
                threads: int | None = None) -> list[Callable[[], Any]]:
    """A training epoch of `cfg` on (x, y) for each of `members` twins of the Flax `model`, one call
    a member: the recipe's update, its adversarial objective and its augmentation."""
    _start(threads)
    x, y = _tensors(x, y)
    nets = [twin(model) for _ in range(members)]
    steps = len(x) // cfg.batch_size
    adversarial = pgd = None
    if cfg.adversarial and cfg.adversarial.attack is not None:
        attack = cfg.adversarial.attack
        if not (attack.name == "pgd" and attack.norm == "inf" and attack.random_start and cfg.adversarial.alpha == 0
                and cfg.adversarial.objective == "mix" and tuple(attack.clip or ()) == (0.0, 1.0)):
            raise ValueError(f"no PyTorch counterpart of adversarial training with {attack.describe()}")
        pgd = (attack.eps, attack.steps, attack.step_size)
    elif cfg.adversarial:
        adversarial = (cfg.adversarial.alpha, cfg.adversarial.eps)
    augment = (cfg.augment.crop_pad, cfg.augment.flip) if cfg.augment else None
    return [functools.partial(train_epoch, net, Recipe.from_config(net, cfg, steps), x, y, cfg.batch_size, adversarial,
                              augment=augment, pgd=pgd) for net in nets]


def attack_calls(model, ensemble: int | None, spec, x: np.ndarray, y: np.ndarray, batch: int,
                 threads: int | None = None, params=None) -> list[Callable[[], Any]]:
    """The attack of `spec` (:func:`torchattack`) on all of (x, y), `batch` images at a time, against
    a twin of the Flax `model` (with its `params`, when given) or a mean-probability ensemble of
    `ensemble` twins; one call."""
    _start(threads)
    x, y = _tensors(x, y)
    if ensemble is None:
        net = twin(model) if params is None else twin(model).load_flax(params)
    else:
        net = MeanProbabilityEnsemble([twin(model) for _ in range(ensemble)])
    net = net.eval()
    attack = torchattack(net, spec)
    return [lambda: [attack(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]]


def matmul_seconds(n: int, reps: int) -> float:
    """The best of `reps` timed fp32 (n×n)·(n×n) products, after an untimed one."""
    t = torch.rand(n, n)
    torch.mm(t, t)
    return min(time_call(lambda: torch.mm(t, t)) for _ in range(reps))


def versions() -> dict[str, Any]:
    """PyTorch's and torchattacks' versions, and PyTorch's intra-op threads."""
    import torchattacks

    return {"versions": {"torch": torch.__version__, "torchattacks": torchattacks.__version__},
            "torch_threads": torch.get_num_threads()}
