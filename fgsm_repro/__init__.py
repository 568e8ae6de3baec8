"""fgsm-repro: 'Explaining and Harnessing Adversarial Examples' (ICLR 2015), reproduced in JAX."""

from fgsm_repro import cpu_tuning

__version__ = "0.1.0"

cpu_tuning.set_xla_flags()  # before JAX starts its backend (no jax import here)
