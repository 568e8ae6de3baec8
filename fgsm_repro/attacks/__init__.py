"""Attacks as pure functions: ``attack(loss_fn, x, y, eps, ...) -> x_adv``, one per module.

Their configs (``attack: {name: ..., ...}`` in a YAML) are in :mod:`fgsm_repro.config.attacks`:
a spec calls its function on a :class:`Victim`.
"""

from fgsm_repro.attacks.common import Victim
from fgsm_repro.attacks.fgsm import fgsm
from fgsm_repro.attacks.pgd import pgd

__all__ = ["Victim", "fgsm", "pgd"]
