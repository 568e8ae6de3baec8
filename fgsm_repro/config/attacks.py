"""Attack configs: one pydantic model per attack, chosen by its `name`.

``attack: {name: fgsm, eps: .25}`` or ``{name: pgd, eps: .3, steps: 40}`` in a YAML selects the
model registered under that name (every subclass of :class:`AttackSpec` registers itself). A spec
is the attack itself: ``spec(victim, x, y, key) -> x_adv`` is a pure function of the model under
attack and the batch, so evaluation jits it like any other function. The attack functions live in
:mod:`fgsm_repro.attacks` (one module each) and are imported only when an attack runs: loading a
config imports no JAX.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from fgsm_repro.attacks.common import Victim



def _not_bool(value: Any) -> Any:
    # pydantic reads true as 1: `--param steps=true` would run one step
    if isinstance(value, bool):
        raise ValueError("expected a whole number, got true/false")
    return value


NotBool = BeforeValidator(_not_bool)
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, NotBool, Field(gt=0, lt=2**31)]
ClassIndex = Annotated[int, NotBool, Field(ge=0, lt=2**31)]
# A targeted attack's targets: one class for every example, a random other class per example, or
# each example's least likely class (Kurakin et al.'s "iterative least-likely class").
Target = ClassIndex | Literal["random", "least_likely"]
INF = "inf"
TARGET_STREAM = 1  # random targets use fold_in(key, TARGET_STREAM), apart from random starts
PAIR_SCORES_PER_BATCH = 2**26  # JSMA's pair scores held at once, N · n² (256 MB in float32)


class AttackSpec(BaseModel):
    """What every attack has: a `name`, an optional `clip` range for the adversarial inputs (None:
    no clipping, the paper's tables) and the `labels` it attacks (the true ones, the paper's
    default, or the model's own predictions, which avoids label leaking)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    registry: ClassVar[dict[str, type[AttackSpec]]] = {}

    name: str
    clip: tuple[float, float] | None = None
    labels: Literal["true", "predicted"] = "true"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["name"].default
        if isinstance(name, str):
            AttackSpec.registry[name] = cls

    @field_validator("clip")
    @classmethod
    def _ordered(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError("clip must be [low, high] with low < high")
        return v

    def __call__(self, victim: Victim, x, y, key):
        """The adversarial examples of the batch (x, y); `key` feeds random starts."""
        if self.labels == "predicted":
            y = victim.predict(x)
        return self.perturb(victim, x, y, key)

    def perturb(self, victim: Victim, x, y, key):
        raise NotImplementedError(f"{type(self).__name__} does not define perturb")

    def batch_size(self, features: int) -> int | None:
        """The largest batch the attack should run at once on inputs of `features` values (None:
        evaluation's default)."""
        return None

    def targets(self, victim: Victim, x, y, key):
        """The target classes of a targeted attack (`target` set), else None."""
        target = getattr(self, "target", None)
        if target is None:
            return None
        import jax
        import jax.numpy as jnp

        from fgsm_repro.attacks.common import least_likely, random_other

        if target == "least_likely":
            return least_likely(victim.logits(x))
        if target == "random":
            classes = jax.eval_shape(victim.logits, x).shape[-1]
            return random_other(jax.random.fold_in(key, TARGET_STREAM), y, classes)
        return jnp.full(y.shape, target, jnp.int32)

    def check_classes(self, num_classes: int | None) -> None:
        """Refuse a `target` class the model under attack does not have (None: unknown, unchecked)."""
        target = getattr(self, "target", None)
        if num_classes is not None and isinstance(target, int) and target >= num_classes:
            raise NestedFieldError(("target",), f"class {target} does not exist: the model has {num_classes} "
                                   f"classes (0..{num_classes - 1})")

    def describe(self) -> str:
        """A short title, e.g. ``fgsm eps=0.25``."""
        defaults = {k: f.default for k, f in type(self).model_fields.items()}
        shown = {k: v for k, v in self.model_dump(exclude={"name", "labels", "clip"}, exclude_none=True).items()
                 if k == "eps" or v != defaults.get(k)}  # settings left at their defaults say nothing
        return " ".join([self.name, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())])


class FGSM(AttackSpec):
    """The fast gradient sign method (:mod:`fgsm_repro.attacks.fgsm`), L∞ size `eps`; `targeted`:
    the labels given are target classes, and the step lowers their cost (Appendix A's fooling
    images) rather than raising the cost of the true class."""

    name: Literal["fgsm"] = "fgsm"
    eps: NonNegativeFloat
    targeted: bool = False
    target: Target | None = None

    @field_validator("targeted")
    @classmethod
    def _targets_given(cls, v, info):
        if v and info.data.get("labels") == "predicted":
            raise ValueError("a targeted attack steps toward the labels it is given: labels must be 'true'")
        return v

    @field_validator("target")
    @classmethod
    def _one_way_to_target(cls, v, info):
        if v is not None and info.data.get("targeted"):
            raise ValueError("give either targeted: true (the labels are targets) or target, not both")
        return v

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.fgsm import fgsm

        targets = self.targets(victim, x, y, key)
        if targets is not None:
            return fgsm(victim.loss, x, targets, self.eps, targeted=True, clip=self.clip)
        return fgsm(victim.loss, x, y, self.eps, targeted=self.targeted, clip=self.clip)


class PGD(AttackSpec):
    """PGD (:mod:`fgsm_repro.attacks.pgd`): `steps` normalised-gradient steps of `step_size`
    (default 2.5·eps/steps, Madry et al.'s rule) projected on the L∞ or L2 (`norm`) ball of radius
    `eps`, from a random start in the ball (`random_start`; without it and in L∞, the basic
    iterative method with a free step size); `restarts` keeps each example's strongest start."""

    name: Literal["pgd"] = "pgd"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    steps: PositiveInt = 10
    step_size: PositiveFloat | None = None
    random_start: bool = True
    restarts: PositiveInt = 1
    target: Target | None = None

    @field_validator("restarts")
    @classmethod
    def _restarts_need_starts(cls, v, info):
        if v > 1 and not info.data.get("random_start", True):
            raise ValueError("restarts need random_start: true")
        return v

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.pgd import pgd

        targets = self.targets(victim, x, y, key)
        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        return pgd(victim.loss, x, y if targets is None else targets, self.eps, step_size=step_size,
                   steps=self.steps, norm=_norm(self.norm), key=key if self.random_start else None,
                   restarts=self.restarts, targeted=targets is not None, clip=self.clip)


class DeepFool(AttackSpec):
    """DeepFool (:mod:`fgsm_repro.attacks.deepfool`), L2 or L∞: steps to the nearest linearised
    boundary until the label flips, `overshoot` beyond it, at most `max_iter` steps. A minimal-
    perturbation attack: no ε; its result is read in the perturbation norms."""

    name: Literal["deepfool"] = "deepfool"
    norm: Literal[2, "inf"] = 2
    overshoot: NonNegativeFloat = 0.02
    max_iter: PositiveInt = 50

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.deepfool import deepfool

        return deepfool(victim.logits, x, y, norm=_norm(self.norm), overshoot=self.overshoot,
                        max_iter=self.max_iter, clip=self.clip)


class JSMA(AttackSpec):
    """JSMA (:mod:`fgsm_repro.attacks.jsma`): a targeted L0 attack changing pixel pairs by
    `theta` (of the clip range) until the target class wins, at most a fraction `gamma` of the
    pixels. Papernot et al.'s θ = 1 and γ = 14.5%; targets random unless given."""

    name: Literal["jsma"] = "jsma"
    clip: tuple[float, float] = (0.0, 1.0)
    theta: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 1.0
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.145
    target: Target = "random"

    @field_validator("theta")
    @classmethod
    def _moves(cls, v):
        if v == 0:
            raise ValueError("theta must not be 0")
        return v

    def batch_size(self, features: int) -> int | None:
        return max(1, PAIR_SCORES_PER_BATCH // features**2)  # the (N, n, n) pair scores bound the batch

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.jsma import jsma

        return jsma(victim.logits, x, self.targets(victim, x, y, key), theta=self.theta, gamma=self.gamma,
                    clip=self.clip)


class CarliniWagnerL2(AttackSpec):
    """Carlini–Wagner L2 (:mod:`fgsm_repro.attacks.cw`): Adam on the tanh-reparametrised input,
    `binary_search_steps` values of the constant c from `initial_const`, `steps` each, margin
    `confidence` (κ); untargeted unless `target` is set. Minimal-perturbation: no ε. A clip range
    is the tanh box; ``clip: null`` optimises the perturbation directly."""

    name: Literal["cw"] = "cw"
    clip: tuple[float, float] | None = (0.0, 1.0)
    confidence: NonNegativeFloat = 0.0
    initial_const: PositiveFloat = 1e-3
    binary_search_steps: PositiveInt = 9
    steps: PositiveInt = 1000
    learning_rate: PositiveFloat = 0.01
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.cw import cw_l2

        targets = self.targets(victim, x, y, key)
        return cw_l2(victim.logits, x, y if targets is None else targets, targeted=targets is not None,
                     confidence=self.confidence, initial_const=self.initial_const,
                     binary_search_steps=self.binary_search_steps, steps=self.steps,
                     learning_rate=self.learning_rate, clip=self.clip)


def _norm(norm) -> float:
    return math.inf if norm == INF else float(norm)


class FGM(AttackSpec):
    """The fast gradient method (:mod:`fgsm_repro.attacks.fgm`): one step of Lₚ size `eps` along
    the gradient normalised by its L2 or L1 norm (FGSM is the L∞ case)."""

    name: Literal["fgm"] = "fgm"
    eps: NonNegativeFloat
    norm: Literal[1, 2] = 2
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.fgm import fgm

        targets = self.targets(victim, x, y, key)
        return fgm(victim.loss, x, y if targets is None else targets, self.eps, norm=self.norm,
                   targeted=targets is not None, clip=self.clip)


class BIM(AttackSpec):
    """I-FGSM / the basic iterative method (:mod:`fgsm_repro.attacks.bim`) with Kurakin et al.'s
    rule: step 1/255 and ⌊min(255ε + 4, 1.25 · 255ε)⌋ steps unless given, pixels kept in [0, 1]
    unless `clip` says otherwise. `target: least_likely` is their iterative least-likely class."""

    name: Literal["bim"] = "bim"
    clip: tuple[float, float] | None = (0.0, 1.0)
    eps: NonNegativeFloat
    steps: PositiveInt | None = None
    step_size: PositiveFloat | None = None
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.bim import bim

        targets = self.targets(victim, x, y, key)
        return bim(victim.loss, x, y if targets is None else targets, self.eps, step_size=self.step_size,
                   steps=self.steps, targeted=targets is not None, clip=self.clip)


class NestedFieldError(ValueError):
    """A validation error inside a nested config, keeping the field path for the one-line message."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc, self.msg = loc, msg


def parse_attack(value: Any) -> AttackSpec:
    """An attack spec from a mapping (``name`` defaults to fgsm, the paper's attack)."""
    if isinstance(value, AttackSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {name: fgsm, eps: 0.25}")
    name = value.get("name", "fgsm")
    spec = AttackSpec.registry.get(name) if isinstance(name, str) else None
    if spec is None:
        raise NestedFieldError(("name",), f"unknown attack {name!r}; known: {', '.join(sorted(AttackSpec.registry))}")
    try:
        return spec.model_validate(value)
    except ValidationError as e:
        err = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
        known = ", ".join(k for k in spec.model_fields if k != "name")
        msg = f"unknown key for {name} (its keys: {known})" if err["type"] == "extra_forbidden" else err["msg"]
        # a union's members appear in the location as type descriptions: keep the field names
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or p.isidentifier())
        raise NestedFieldError(loc, msg) from None
