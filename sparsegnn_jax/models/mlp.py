"""Multi-layer perceptrons, including the two MLPs of Peng et al. (ICCD 2022)."""
from __future__ import annotations

from typing import Sequence, Union

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import Linear, dropout, glorot, zeros

__all__ = ["MLP", "paper_link_mlp", "paper_node_mlp", "torch_uniform"]

_INITS = ("glorot", "torch")


def torch_uniform(fan_in: int):
    """PyTorch's ``nn.Linear`` default init, ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, for any shape.

    Args:
      fan_in: input width of the layer.

    Returns:
      An initializer ``(key, shape, dtype) -> array``.
    """
    bound = 1.0 / max(int(fan_in), 1) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MLP(nnx.Module):
    """Stack of ``Linear`` layers with ReLU and dropout between them (none after the last).

    Params: ``layers/<i>/kernel [in, out]`` and ``layers/<i>/bias [out]`` when ``use_bias``.

    Args:
      in_dim: input width.
      hidden: hidden width (repeated ``num_layers - 1`` times) or a sequence of hidden widths.
      out_dim: output width.
      num_layers: number of Linear layers when ``hidden`` is an int (ignored for a sequence).
      use_bias: biases in every layer.
      dropout: rate between layers, active only when a ``dropout_key`` is passed.
      init: "glorot" (Glorot-uniform kernels, zero biases) or "torch" (PyTorch's nn.Linear default,
        as in the paper's code).
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_dim: int, hidden: Union[int, Sequence[int]], out_dim: int,
                 num_layers: int = 2, *, use_bias: bool = True, dropout: float = 0.0,
                 init: str = "glorot", rngs: nnx.Rngs):
        if init not in _INITS:
            raise ValueError(f"MLP: init must be one of {_INITS}, got {init!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}")
        if isinstance(hidden, int):
            if int(num_layers) < 1:
                raise ValueError(f"MLP: num_layers must be >= 1, got {num_layers}")
            hidden = (hidden,) * (int(num_layers) - 1)
        self.hidden = tuple(int(h) for h in hidden)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.num_layers = len(self.hidden) + 1
        self.use_bias = bool(use_bias)
        self.dropout = float(dropout)
        dims = (self.in_dim,) + self.hidden + (self.out_dim,)
        layers = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            if init == "torch":
                kernel_init, bias_init = torch_uniform(d_in), torch_uniform(d_in)
            else:
                kernel_init, bias_init = glorot, zeros
            layers.append(Linear(d_in, d_out, use_bias=use_bias, kernel_init=kernel_init,
                                 bias_init=bias_init, rngs=rngs))
        self.layers = nnx.List(layers)

    def __call__(self, x: jax.Array, dropout_key=None) -> jax.Array:
        """Applies the MLP.

        Args:
          x: ``[..., in_dim]``.
          dropout_key: PRNG key; dropout is active iff it is given.

        Returns:
          ``[..., out_dim]``.
        """
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = jax.nn.relu(x)
                key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
                x = dropout(x, self.dropout, key)
        return x


def paper_link_mlp(rngs: nnx.Rngs) -> MLP:
    """The paper's link-prediction MLP: ``Linear(16, 128) -> ReLU -> Linear(128, 1)``, with biases.

    Its input is the concatenation of two 8-d node embeddings; the output is a logit.

    Args:
      rngs: ``nnx.Rngs``.

    Returns:
      ``MLP`` with 2305 parameters.
    """
    return MLP(16, (128,), 1, use_bias=True, init="torch", rngs=rngs)


def paper_node_mlp(rngs: nnx.Rngs, num_classes: int = 10, in_dim: int = 64) -> MLP:
    """The paper's node-classification MLP: ``in_dim -> 256 -> 128 -> num_classes``.

    No biases, ReLU, dropout 0.1 between layers; outputs logits (apply log-softmax in the loss).

    Args:
      rngs: ``nnx.Rngs``.
      num_classes: output width.
      in_dim: input (embedding) width.

    Returns:
      ``MLP``.
    """
    return MLP(in_dim, (256, 128), num_classes, use_bias=False, dropout=0.1, init="torch", rngs=rngs)
