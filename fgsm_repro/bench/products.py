"""A workload's matrix products and convolutions alone, as JAX programs on random operands: timed
beside the workload, they show how close to the arithmetic bound JAX's products come by
themselves, as if everything else (maxout, softmax, sign, clipping, the optimizer, transfers)
were free."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax

from fgsm_repro import cpu_tuning
from fgsm_repro.bench.geometry import conv_layers

if TYPE_CHECKING:
    from fgsm_repro.models import ConvMaxout

Products = tuple[Callable, list[tuple]]  # a jitted program and the arguments of each of its calls


def attack_products(model, shapes: list[tuple[int, int]], steps: int, examples: int) -> Products:
    """An attack's dense products alone, one call per batch like the attack's: at each of `steps`
    attack steps, each layer's forward product and its backward product to the layer's input
    (`shapes`: each layer's (in, out), every layer of every member against an ensemble), on
    random operands, compiled with the attack programs' options for `model`."""
    from fgsm_repro.evaluation import EVAL_BATCH

    @functools.partial(jax.jit, compiler_options=cpu_tuning.compiler_options(model, attack=True))
    def products(inputs, output_grads, weights):
        def step(_, operands):  # each step's products take the last step's: nothing to hoist out of the loop
            inputs, output_grads = operands
            return ([g @ m.T for g, m in zip(output_grads, weights, strict=True)],
                    [a @ m for a, m in zip(inputs, weights, strict=True)])

        return jax.lax.fori_loop(0, steps, step, (inputs, output_grads))

    key = jax.random.PRNGKey(0)
    # Scaled so that a forward and a backward product keep the operands' magnitude over the steps.
    weights = [jax.random.normal(key, (k, m)) * (k * m) ** -0.25 for k, m in shapes]
    sizes = [min(EVAL_BATCH, examples - start) for start in range(0, examples, EVAL_BATCH)]
    operands = {b: ([jax.random.normal(key, (b, k)) for k, _ in shapes],
                    [jax.random.normal(key, (b, m)) for _, m in shapes]) for b in set(sizes)}
    return products, [(*operands[b], weights) for b in sizes]


def conv_epoch_products(model: ConvMaxout, image_shape: tuple[int, int, int], shapes: list[tuple[int, int]],
                        batch: int, batches: int) -> Products:
    """The conv net's training products alone, one call per minibatch (`batches` of `batch`):
    each conv layer's forward convolution and its gradients to the kernel and (but for the first
    layer) to the input, in the forms the model's training runs
    (:func:`fgsm_repro.ops.conv.conv_nhwc`), and the dense layers' three products (`shapes`: each
    layer's (in, out), the conv layers' first), on random operands, compiled with the conv
    programs' options."""
    from fgsm_repro.ops.conv import conv_nhwc

    convs, _ = conv_layers(model, *image_shape)
    dense = shapes[len(convs):]

    @functools.partial(jax.jit, compiler_options=cpu_tuning.compiler_options(model))
    def products(maps, kernels, map_grads, inputs, weights, output_grads):
        outputs = []
        for i, (x, kernel, g, layer) in enumerate(zip(maps, kernels, map_grads, convs, strict=True)):
            pad = ((layer.pad, layer.pad), (layer.pad, layer.pad))
            y, vjp = jax.vjp(lambda x_, k_, pad=pad: conv_nhwc(x_, k_, pad), x, kernel)
            dx, dkernel = vjp(g)
            outputs += [y, dkernel] + ([dx] if i else [])  # the first layer's input gradient is not needed
        for a, m, g in zip(inputs, weights, output_grads, strict=True):
            outputs += [a @ m, g @ m.T, a.T @ g]
        return outputs

    key = jax.random.PRNGKey(0)
    maps = [jax.random.normal(key, (batch, g.height, g.width, g.channels)) for g in convs]
    kernels = [jax.random.normal(key, (g.kernel, g.kernel, g.channels, g.filters)) * 0.01 for g in convs]
    map_grads = [jax.random.normal(key, (batch, g.out_height, g.out_width, g.filters)) for g in convs]
    inputs = [jax.random.normal(key, (batch, k)) for k, _ in dense]
    weights = [jax.random.normal(key, shape) for shape in dense]
    output_grads = [jax.random.normal(key, (batch, n)) for _, n in dense]
    return products, [(maps, kernels, map_grads, inputs, weights, output_grads)] * batches
