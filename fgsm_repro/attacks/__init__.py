"""Attacks as pure functions, one per module: ``attack(loss_fn or logits_fn, x, y, ...) -> x_adv``.

- :func:`fgsm` — the paper's fast gradient sign method (L∞);
- :func:`fgm` — its L2 / L1 variants (FGVM);
- :func:`bim` — I-FGSM, the basic iterative method (L∞);
- :func:`pgd` — projected gradient descent, L∞ or L2, random starts and restarts;
- :func:`deepfool` — minimal L2 / L∞ steps to the nearest boundary;
- :func:`jsma` — the Jacobian saliency map attack (L0, targeted);
- :func:`cw_l2` — Carlini–Wagner L2.

Their configs (``attack: {name: ..., ...}`` in a YAML) are in :mod:`fgsm_repro.config.attacks`:
a spec calls its function on a :class:`Victim`.
"""

from fgsm_repro.attacks.bim import bim
from fgsm_repro.attacks.common import Victim, least_likely, random_other
from fgsm_repro.attacks.cw import cw_l2
from fgsm_repro.attacks.deepfool import deepfool
from fgsm_repro.attacks.fgm import fgm
from fgsm_repro.attacks.fgsm import fgsm
from fgsm_repro.attacks.jsma import jsma
from fgsm_repro.attacks.pgd import pgd

__all__ = ["Victim", "bim", "cw_l2", "deepfool", "fgm", "fgsm", "jsma", "least_likely", "pgd", "random_other"]
