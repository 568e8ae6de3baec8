"""The conv maxout net's layers as the benchmark counts their FLOPs: each conv layer is its
dense-equivalent product at every output position (:meth:`fgsm_repro.bench.workloads.Workload.flops`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from fgsm_repro.models import ConvMaxout


class ConvGeometry(NamedTuple):
    """A stride-1 conv layer on (height, width, channels) input maps with `filters` kernels of
    kernel × kernel and zero padding `pad` on every side."""
    height: int
    width: int
    channels: int
    filters: int
    kernel: int
    pad: int

    @property
    def out_height(self) -> int:
        return self.height + 2 * self.pad - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.width + 2 * self.pad - self.kernel + 1


def conv_layers(model: ConvMaxout, height: int, width: int,
                in_channels: int) -> tuple[list[ConvGeometry], tuple[int, int, int]]:
    """Each conv layer's geometry on (height, width, in_channels) input, and the (height, width,
    channels) of the maps the dense layers flatten."""
    layers = []
    for c, k, p, (window, stride) in zip(model.channels, model.kernels, model.pads, model.pools, strict=True):
        layer = ConvGeometry(height, width, in_channels, c * model.pieces, k, p)
        layers.append(layer)
        height, width = (layer.out_height - window) // stride + 1, (layer.out_width - window) // stride + 1
        in_channels = c
    return layers, (height, width, in_channels)


def layer_shapes(model: ConvMaxout, height: int, width: int, in_channels: int) -> list[tuple[int, int, int]]:
    """Per layer, (output positions, dense-equivalent in × out): conv i is a (k·k·C_in) × (C_out)
    product at every output position, a dense layer one position."""
    convs, (h, w, c) = conv_layers(model, height, width, in_channels)
    shapes = [(g.out_height * g.out_width, g.kernel ** 2 * g.channels, g.filters) for g in convs]
    return [*shapes, (1, h * w * c, model.units * model.unit_pieces), (1, model.units, model.num_classes)]
