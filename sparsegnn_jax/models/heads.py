"""Link decoders and task wrappers: ``LinkPredictor(encoder, decoder)``, ``NodeClassifier(encoder, head)``."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import jraph
from flax import nnx

from .mlp import MLP

__all__ = ["DotDecoder", "LinkPredictor", "MLPDecoder", "NodeClassifier", "pair_representation"]

_MODES = ("hadamard", "concat", "pair")
# Input width of the MLP per embedding width D.
_WIDTH = {"hadamard": 1, "concat": 2, "pair": 4}


def _edges_kw(edges) -> dict:
    """``edges=`` for the encoder only when given: encoders without edges (``Identity``) take
    no such argument."""
    return {} if edges is None else {"edges": edges}


def _split(key, n: int):
    return (None,) * n if key is None else tuple(jax.random.split(key, n))


class DotDecoder(nnx.Module):
    """Link logit ``<z_src, z_dst>``; no parameters."""

    def __call__(self, z_src: jax.Array, z_dst: jax.Array, dropout_key=None,
                 pair_features=None) -> jax.Array:
        """Scores pairs.

        Args:
          z_src, z_dst: ``[P, D]`` embeddings of the pair endpoints.
          dropout_key: unused (no parameters).
          pair_features: must be None (a dot product has nowhere to put them).

        Returns:
          ``[P]`` logits.
        """
        del dropout_key
        _with_pair_features(None, pair_features, 0)
        return jnp.sum(z_src * z_dst, axis=-1)


def _with_pair_features(x, pair_features, width: int):
    """``x`` with the pair features appended; refuses features a decoder was not built for."""
    given = 0 if pair_features is None else pair_features.shape[-1]
    if given != width:
        raise ValueError(f"link decoder built for {width} pair features, got "
                         f"{'none' if pair_features is None else given}")
    return x if not width else jnp.concatenate([x, pair_features.astype(x.dtype)], axis=-1)


def pair_representation(z_src: jax.Array, z_dst: jax.Array, mode: str) -> jax.Array:
    """The MLP input of a pair: ``[P, D] x [P, D] -> [P, k D]``.

    "hadamard": ``z_src * z_dst``; "concat": ``[z_src, z_dst]`` (the paper's); "pair":
    ``[z_src, z_dst, z_src * z_dst, |z_src - z_dst|]`` - the endpoints in order (direction
    kept) plus their interaction, which a ReLU MLP on the concatenation alone approximates
    poorly (a similarity of the two embeddings is a product of its inputs).
    """
    if mode == "hadamard":
        return z_src * z_dst
    if mode == "concat":
        return jnp.concatenate([z_src, z_dst], axis=-1)
    if mode == "pair":
        return jnp.concatenate([z_src, z_dst, z_src * z_dst, jnp.abs(z_src - z_dst)], axis=-1)
    raise ValueError(f"pair_representation: mode must be one of {_MODES}, got {mode!r}")


class MLPDecoder(nnx.Module):
    """Link logit from an MLP on :func:`pair_representation` ("hadamard", "concat" or "pair").

    ``MLPDecoder(8, 128, mode="concat")`` is the paper's ``Linear(16,128) -> ReLU -> Linear(128,1)``.

    Params: ``mlp/layers/<i>/kernel`` and biases.

    Args:
      in_dim: embedding width ``D``.
      hidden: hidden width(s) of the MLP.
      mode: "hadamard", "concat" or "pair".
      num_layers: Linear layers when ``hidden`` is an int.
      pair_features: width of per-pair features appended to the MLP's input (e.g. the pair
        history of ``sparsegnn_jax.history``); 0: none. The first layer's kernel then has
        ``pair_features`` more rows, pruned and counted like the others.
      use_bias: biases in the MLP.
      dropout: dropout rate between MLP layers.
      init: MLP init, "glorot" or "torch".
      rngs: ``nnx.Rngs``.
    """

    def __init__(self, in_dim: int, hidden: Union[int, Sequence[int]], mode: str = "hadamard",
                 num_layers: int = 2, *, use_bias: bool = True, dropout: float = 0.0,
                 init: str = "glorot", pair_features: int = 0, rngs: nnx.Rngs):
        if mode not in _MODES:
            raise ValueError(f"MLPDecoder: mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        self.in_dim = int(in_dim)
        self.pair_features = int(pair_features)
        width = self.in_dim * _WIDTH[mode] + self.pair_features
        self.mlp = MLP(width, hidden, 1, num_layers, use_bias=use_bias, dropout=dropout, init=init, rngs=rngs)

    def __call__(self, z_src: jax.Array, z_dst: jax.Array, dropout_key=None,
                 pair_features=None) -> jax.Array:
        """Scores pairs.

        Args:
          z_src, z_dst: ``[P, D]``.
          dropout_key: PRNG key; dropout is active iff it is given.
          pair_features: ``[P, pair_features]`` when the decoder was built with them.

        Returns:
          ``[P]`` logits.
        """
        x = pair_representation(z_src, z_dst, self.mode)
        x = _with_pair_features(x, pair_features, self.pair_features)
        return self.mlp(x, dropout_key=dropout_key)[..., 0]


class LinkPredictor(nnx.Module):
    """Encoder + pair decoder.

    Args:
      encoder: ``encoder(graph, dropout_key=None) -> [N, D]`` (e.g. ``Encoder`` or ``Identity``).
      decoder: ``decoder(z_src, z_dst, dropout_key=None) -> [P]``.
    """

    def __init__(self, encoder, decoder):
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, graph: jraph.GraphsTuple, dropout_key=None, edges=None) -> jax.Array:
        """Node embeddings ``[N, D]`` (``edges``: the encoder's compacted edges, if any)."""
        return self.encoder(graph, dropout_key=dropout_key, **_edges_kw(edges))

    def decode(self, z: jax.Array, pairs: jax.Array, dropout_key=None,
               pair_features=None) -> jax.Array:
        """Logits ``[P]`` for ``pairs [P, 2]`` (source, destination) from embeddings ``z``
        (and ``pair_features [P, F]`` when the decoder reads them)."""
        pairs = jnp.asarray(pairs)
        if pairs.ndim != 2 or pairs.shape[-1] != 2:
            raise ValueError(f"LinkPredictor: pairs must have shape [P, 2], got {pairs.shape}")
        kwargs = {} if pair_features is None else {"pair_features": pair_features}
        return self.decoder(z[pairs[:, 0]], z[pairs[:, 1]], dropout_key=dropout_key, **kwargs)

    def __call__(self, graph: jraph.GraphsTuple, pairs: jax.Array, dropout_key=None,
                 pair_features=None, edges=None) -> jax.Array:
        """Link logits.

        Args:
          graph: ``GraphsTuple``.
          pairs: ``[P, 2]`` int node pairs.
          dropout_key: PRNG key; dropout is active iff it is given.
          pair_features: ``[P, F]`` per-pair inputs of a decoder built with ``pair_features=F``
            (e.g. ``history.pair_features``), else None.
          edges: ``encoders.CompactEdges`` the encoder passes messages over, or None.

        Returns:
          ``[P]`` logits.
        """
        enc_key, dec_key = _split(dropout_key, 2)
        return self.decode(self.encode(graph, enc_key, edges), pairs, dec_key, pair_features)


class NodeClassifier(nnx.Module):
    """Encoder + per-node head.

    Args:
      encoder: ``encoder(graph, dropout_key=None) -> [N, D]``.
      head: ``head(h, dropout_key=None) -> [N, C]`` (e.g. ``MLP``), or None to use the encoder's
        output as logits.
    """

    def __init__(self, encoder, head: Optional[nnx.Module] = None):
        self.encoder = encoder
        self.head = head

    def __call__(self, graph: jraph.GraphsTuple, dropout_key=None, edges=None) -> jax.Array:
        """Node logits.

        Args:
          graph: ``GraphsTuple``.
          dropout_key: PRNG key; dropout is active iff it is given.
          edges: ``encoders.CompactEdges`` the encoder passes messages over, or None.

        Returns:
          ``[N, C]`` logits.
        """
        enc_key, head_key = _split(dropout_key, 2)
        h = self.encoder(graph, dropout_key=enc_key, **_edges_kw(edges))
        return h if self.head is None else self.head(h, dropout_key=head_key)
