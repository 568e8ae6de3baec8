"""fgsm-repro: 'Explaining and Harnessing Adversarial Examples' (ICLR 2015), reproduced in JAX."""

__version__ = "0.1.0"
