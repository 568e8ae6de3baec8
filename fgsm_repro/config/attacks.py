"""Attack configs: one pydantic model per attack, chosen by its `name`.

``attack: {name: fgsm, eps: .25}`` or ``{name: pgd, eps: .3, steps: 40}`` in a YAML selects the
model registered under that name (every subclass of :class:`AttackSpec` registers itself). A spec
is the attack itself: ``spec(victim, x, y, key) -> x_adv`` is a pure function of the model under
attack and the batch, so evaluation jits it like any other function. The attack functions live in
:mod:`fgsm_repro.attacks` (one module each) and are imported only when an attack runs: loading a
config imports no JAX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from fgsm_repro.attacks.common import Victim

NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]


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

    def describe(self) -> str:
        """A short title, e.g. ``fgsm eps=0.25``."""
        shown = {k: v for k, v in self.model_dump(exclude={"name", "labels", "clip"}, exclude_none=True).items()
                 if v is not False}  # a switch left off says nothing
        return " ".join([self.name, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())])


class FGSM(AttackSpec):
    """The fast gradient sign method (:mod:`fgsm_repro.attacks.fgsm`), L∞ size `eps`; `targeted`:
    the labels given are target classes, and the step lowers their cost (Appendix A's fooling
    images) rather than raising the cost of the true class."""

    name: Literal["fgsm"] = "fgsm"
    eps: NonNegativeFloat
    targeted: bool = False

    @field_validator("targeted")
    @classmethod
    def _targets_given(cls, v, info):
        if v and info.data.get("labels") == "predicted":
            raise ValueError("a targeted attack steps toward the labels it is given: labels must be 'true'")
        return v

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.fgsm import fgsm

        return fgsm(victim.loss, x, y, self.eps, targeted=self.targeted, clip=self.clip)


class PGD(AttackSpec):
    """PGD / I-FGSM (:mod:`fgsm_repro.attacks.pgd`): `steps` signed-gradient steps of `step_size`
    (default 2.5·eps/steps, Madry et al.'s rule) projected on the L∞ ball of radius `eps`, from a
    uniform random start in the ball (`random_start`; without it, the basic iterative method)."""

    name: Literal["pgd"] = "pgd"
    eps: NonNegativeFloat
    steps: PositiveInt = 10
    step_size: PositiveFloat | None = None
    random_start: bool = True

    def perturb(self, victim, x, y, key):
        from fgsm_repro.attacks.pgd import pgd

        step_size = self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps
        return pgd(victim.loss, x, y, self.eps, step_size=step_size, steps=self.steps,
                   key=key if self.random_start else None, clip=self.clip)


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
    spec = AttackSpec.registry.get(name)
    if spec is None:
        raise NestedFieldError(("name",), f"unknown attack {name!r}; known: {', '.join(sorted(AttackSpec.registry))}")
    try:
        return spec.model_validate(value)
    except ValidationError as e:
        err = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")[0]
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise NestedFieldError(err["loc"], msg) from None
