"""Workarounds for XLA's CPU backend, each beside its plain reference implementation.

Every op here computes what its ``*_reference`` function does — the obvious jnp/lax/flax code,
same values and gradients (up to float rounding where its docstring says so) — in a form XLA's
CPU backend runs faster. The models import the ops by name; ``tests/test_ops.py`` checks each
against its reference. What each saves is measured in docs/performance.md.

Import the ops from their modules (``from fgsm_repro.ops.maxout import maxout``): this package
re-exports nothing, so that each module keeps its name.
"""
