"""A toy model, written as a user adds one: a Flax module in a module of their own, named in a
config as ``model: {name: "tiny_net:TinyNet", options: {hidden: 32}}`` (softmax outputs; the
options are its fields). Like every model it takes ``train`` (dropout on or off)."""

import flax.linen as nn


class TinyNet(nn.Module):
    hidden: int = 32
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes)(h)
