"""fgsm-repro: 'Explaining and Harnessing Adversarial Examples' (ICLR 2015), reproduced in JAX.

Importing the package changes nothing global: :class:`fgsm_repro.runtime.Runtime` applies the
CPU tunings, the compilation cache and several processes (the CLI does it first).
"""

__version__ = "0.1.0"
