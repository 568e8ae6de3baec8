"""What every attack's config spec is, and how an attack is found by its name.

An attack is one module: its pure function and its spec, a pydantic model subclassing
:class:`AttackSpec` whose ``name`` is the module's name (``fgsm_repro/attacks/pgd.py`` defines
``pgd`` and ``class PGD(AttackSpec)``). ``attack: {name: pgd, eps: .3, steps: 40}`` in a YAML
imports that module on first use and validates the settings with its spec. A user's attack lives
in a module of their own and is named ``module:Class`` (or ``module`` when it defines one spec),
found beside the config, in the current folder or on ``sys.path`` (:mod:`fgsm_repro.plugins`).

A spec is the attack itself: ``spec(victim, x, y, key) -> x_adv`` is a pure function of the model
under attack and the batch, so evaluation and training jit it like any other function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_serializer

from fgsm_repro import plugins
from fgsm_repro.errors import NestedFieldError, ReproError, field_problem

if TYPE_CHECKING:
    from fgsm_repro.attacks.common import Victim

PACKAGE = "fgsm_repro.attacks"
NOT_ATTACKS = ("base", "common")  # the modules of the package that define no attack


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
# The random streams of an attack's `key`: random targets use fold_in(key, TARGET_STREAM); the
# first start `key` itself, start r > 0 fold_in(fold_in(key, RESTART_STREAM), r); a run per
# target class t (APGD-T) fold_in(fold_in(key, TARGET_CLASS_STREAM), t).
TARGET_STREAM, RESTART_STREAM, TARGET_CLASS_STREAM = 1, 2, 3


def norm_value(norm) -> float:
    """A spec's `norm` setting (1, 2 or "inf") as the number the attack functions take."""
    return math.inf if norm == INF else float(norm)


class AttackSpec(BaseModel):
    """What every attack has: a `name`, an optional `clip` range for the adversarial inputs (None:
    no clipping, the paper's tables) and the `labels` it attacks (the true ones, the paper's
    default, or the model's own predictions, which avoids label leaking).

    A subclass sets ``name: Literal["<its name>"] = "<its name>"``, its own settings, and
    :meth:`perturb`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    clip: tuple[float, float] | None = None
    labels: Literal["true", "predicted"] = "true"

    @model_serializer(mode="wrap")
    def _named(self, handler):
        # The name is always dumped, though it is each attack's default: it says which attack.
        out = handler(self)
        return {"name": self.name, **out} if isinstance(out, dict) else out

    @field_validator("clip")
    @classmethod
    def _ordered(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError("clip must be [low, high] with low < high")
        return v

    def __call__(self, victim: Victim, x, y, key):
        """The adversarial examples of the batch (x, y); `key` feeds random starts and noise."""
        if self.labels == "predicted":
            y = victim.predict(x)
        return self.perturb(victim, x, y, key)

    def perturb(self, victim: Victim, x, y, key):
        raise NotImplementedError(f"{type(self).__name__} does not define perturb")

    def with_details(self, victim: Victim, x, y, key):
        """(adversarial examples, details): what :meth:`__call__` gives, and per-example arrays
        (examples on the last axis) an attack reports beside them — e.g. AutoAttack's robust mask
        after each stage — as ``{name: array}``; {} by default."""
        return self(victim, x, y, key), {}

    def summarize_details(self, details: dict) -> dict:
        """The metrics of the whole test set's `details` (:meth:`with_details`, concatenated over
        the batches); {} by default."""
        return {}

    def from_gradient(self, x, x_grad):
        """The adversarial examples from ∇ₓJ at x alone, for a one-step attack on the true labels
        (adversarial training reuses the gradient of its clean term); None: the attack needs the
        model (:meth:`__call__`)."""
        return None

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
        shown = {k: v for k, v in self.model_dump(exclude={"labels", "clip"}, exclude_none=True).items()
                 if k != "name" and (k == "eps" or v != defaults.get(k))}  # settings left at their defaults say nothing
        return " ".join([self.name, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())])


def own_name(spec: type[AttackSpec]) -> str | None:
    """The name a spec class gives itself (its `name` field's default)."""
    name = spec.model_fields["name"].default
    return name if isinstance(name, str) else None


def _specs_of(module) -> list[type[AttackSpec]]:
    return [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, AttackSpec)
            and v.__module__ == module.__name__ and own_name(v)]


@functools.cache
def built_in_attacks() -> dict[str, type[AttackSpec]]:
    """The project's attacks, name -> spec: one per module of :mod:`fgsm_repro.attacks`."""
    return {name: find_attack(name) for name in plugins.built_in_names(PACKAGE, NOT_ATTACKS)}


def _unknown(name: str, why: str = "") -> ReproError:
    known = ", ".join(plugins.built_in_names(PACKAGE, NOT_ATTACKS))
    return ReproError(f"unknown attack {name!r}{why}; built in: {known}; or your own as module:Class (a module "
                      "beside the config, in the current folder or on PYTHONPATH)")


def find_attack(name: str, folders: Iterable[Path | str] = ()) -> type[AttackSpec]:
    """The spec class of the attack `name`: a built-in name, ``module:Class`` or ``module`` (a
    module defining one spec), user modules searched in `folders` first. One-line ReproError."""
    module_name, _, class_name = name.partition(":")
    if not plugins.is_module(module_name) or (class_name and not class_name.isidentifier()):
        raise _unknown(name)
    built_in = not class_name and "." not in name and name not in NOT_ATTACKS \
        and plugins.module_exists(f"{PACKAGE}.{name}")
    try:
        module = plugins.import_module(f"{PACKAGE}.{name}" if built_in else module_name, folders)
    except ModuleNotFoundError:
        raise _unknown(name, f" (no module {module_name!r})") from None
    if class_name:
        spec = getattr(module, class_name, None)
        if not (isinstance(spec, type) and issubclass(spec, AttackSpec) and own_name(spec)):
            raise _unknown(name, f" ({module_name} has no AttackSpec subclass {class_name} with a name)")
        return spec
    specs = _specs_of(module)
    if len(specs) != 1:
        found = ", ".join(s.__name__ for s in specs) or "none"
        raise _unknown(name, f" (module {module_name} must define one AttackSpec; it defines {found}): name the "
                             "class as module:Class")
    return specs[0]


def parse_attacks(value: Any) -> dict[str, AttackSpec]:
    """A non-empty mapping of label -> attack settings, each parsed (an experiment's ``options.attacks``)."""
    if not isinstance(value, dict) or not value:
        raise ValueError("expected a mapping of label -> attack settings")
    return {label: parse_attack(settings) for label, settings in value.items()}


def parse_attack(value: Any, folders: Iterable[Path | str] = ()) -> AttackSpec:
    """An attack spec from a mapping (``name`` defaults to fgsm, the paper's attack); a user's
    module is searched in `folders` first. Errors are :class:`NestedFieldError` naming the field."""
    if isinstance(value, AttackSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {name: fgsm, eps: 0.25}")
    name = value.get("name", "fgsm")
    if not isinstance(name, str):
        raise NestedFieldError(("name",), f"expected an attack name, got {name!r}")
    try:
        spec = find_attack(name, folders)
    except ReproError as e:
        raise NestedFieldError(("name",), str(e)) from None
    own = own_name(spec)
    try:
        parsed = spec.model_validate({**value, "name": own})
    except ValidationError as e:
        problem = field_problem(e)
        known = ", ".join(k for k in spec.model_fields if k != "name")
        raise NestedFieldError(problem.loc, f"unknown key for {name} (its keys: {known})" if problem.unknown_key
                               else problem.msg) from None
    # A user's attack keeps the name it was found by, so that its records find it again.
    return parsed if name == own else parsed.model_copy(update={"name": name})
