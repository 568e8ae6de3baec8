"""The options of each built-in model kind, checked when a config is loaded.

One pydantic model per kind, with the ranges a model can be built and trained with; each kind of
:data:`fgsm_repro.models.MODELS` names its own. A field left out keeps the Flax module's own
default, so no default is stated twice; ``tests/test_reliability.py`` checks that every module
field has its option here. A user's model without an options model is checked when it is built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_WIDTH = 2**20  # far above any network of the paper; keeps a typo from allocating terabytes

Count = Annotated[int, Field(strict=True, ge=1, le=MAX_WIDTH)]
Classes = Annotated[int, Field(strict=True, ge=2, le=MAX_WIDTH)]
Keep = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]  # a dropout keep probability


def _weight_init(value):
    if value in ("zeros", "lecun_normal"):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return value
    raise ValueError("must be 'zeros', 'lecun_normal' or a number r > 0 (weights drawn from U(-r, r))")


WeightInit = Annotated[str | float, BeforeValidator(_weight_init)]


class _Options(BaseModel):
    """A field left out is the module's default (None here is "not given": null itself is refused)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftmaxRegressionOptions(_Options):
    num_classes: Classes = None
    weight_init: WeightInit = None


class LogisticRegressionOptions(_Options):
    weight_init: WeightInit = None


class _MaxoutOptions(_Options):
    """What the maxout networks share: the output, initialisation and dropout."""

    num_classes: Classes = None
    weight_init: WeightInit = None
    input_keep: Keep = None
    hidden_keep: Keep = None


class MaxoutMLPOptions(_MaxoutOptions):
    units: Count = None
    pieces: Count = None
    layers: Count = None


CONV_LAYER_FIELDS = ("channels", "kernels", "pads", "pools")
CONV_LAYERS = 3


class ConvMaxoutOptions(_MaxoutOptions):
    channels: tuple[Count, ...] = None
    pieces: Count = None
    kernels: tuple[Count, ...] = None
    pads: tuple[Annotated[int, Field(strict=True, ge=0, le=MAX_WIDTH)], ...] = None
    pools: tuple[tuple[Count, Count], ...] = None  # (window, stride) per conv layer
    units: Count = None
    unit_pieces: Count = None

    @model_validator(mode="after")
    def _one_entry_per_conv_layer(self):
        given = {k: len(v) for k in CONV_LAYER_FIELDS if (v := getattr(self, k)) is not None}
        # Those not given keep the module's three layers (fgsm_repro.models.ConvMaxout).
        lengths = set(given.values()) | ({CONV_LAYERS} if len(given) < len(CONV_LAYER_FIELDS) else set())
        if len(lengths) > 1:
            raise ValueError(f"channels, kernels, pads and pools need one entry per conv layer each (the module's "
                             f"default is {CONV_LAYERS} layers; got " + ", ".join(f"{k}: {n}" for k, n in given.items())
                             + ")")
        return self


class RBFNetworkOptions(_Options):
    num_classes: Classes = None
    mean_init: Annotated[float, Field(allow_inf_nan=False)] = None
    precision_init: Annotated[float, Field(gt=0, allow_inf_nan=False)] = None
    precision: Literal["per_class", "tied", "normalised"] = None  # see RBFNetwork


class MPDBMOptions(_Options):
    units: tuple[Count, Count] = None  # the two hidden layers
    num_classes: Classes = None
    visible: Count = None  # pixels per image
    steps: Annotated[int, Field(strict=True, ge=2, le=1000)] = None  # mean-field sweeps, the first doubled
    # Per layer (hidden0, hidden1, label): nonzero N(0, 1) incoming weights per unit, or null for
    # U(-weight_init, weight_init).
    sparse_init: tuple[Count | None, Count | None, Count | None] = None
    weight_init: Annotated[float, Field(gt=0, allow_inf_nan=False)] = None
    hidden_bias_init: tuple[Annotated[float, Field(allow_inf_nan=False)], ...] = None
    classifier: Literal["multi_inference", "mean_field"] = None

    @model_validator(mode="after")
    def _one_bias_per_hidden_layer(self):
        if self.hidden_bias_init is not None and len(self.hidden_bias_init) != 2:
            raise ValueError("hidden_bias_init needs one value per hidden layer (2)")
        return self
