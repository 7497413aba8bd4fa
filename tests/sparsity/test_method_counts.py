"""Exact per-layer counts of every sparsity method over the paper's sparsity grid.

Each method runs a few steps on a small 3-layer dict model. The uniform grid is one vmapped run over
all twelve sparsities; ERK runs the ERK per-layer sparsities through the ``{path: sparsity}``
distribution (also vmapped) after checking, per sparsity, that ``distribution="erk"`` gives the same
keep counts at init. After init and after every update: every layer holds exactly the expected
number of active weights and params are exactly 0 wherever the mask is False.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import SHAPES, loss_fn, make_batch, make_params

import sparsegnn_jax.sparsity as sp
from sparsegnn_jax.sparsity import distributions, masks, schedules

GRID = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 0.90625, 0.9375, 0.96875, 0.984375,
        0.9921875]
STEPS = 8
PATHS = [f"{name}/kernel" for name in SHAPES]

# Step indices: masks change at update_every=2 (rigl/set), prune at 3 (one_shot), at 5
# (admm/slr: 2 dense + 3 penalty), gradually over 1..5 (gmp).
CONFIGS = {
    "dense": {},
    "static": {},
    "one_shot": dict(prune_step=3),
    "gmp": dict(begin_step=1, end_step=5, every=2),
    "admm": dict(dense_steps=2, penalty_steps=3, update_every=1, rho=0.05),
    "slr": dict(dense_steps=2, penalty_steps=3, update_every=1, rho=0.05),
    "set": dict(update_every=2, drop_fraction=0.5),
    "rigl": dict(update_every=2, drop_fraction=0.5),
}




def run(method, cfg, params, batch, steps=STEPS):
    """init + ``steps`` updates; returns per-step (mask counts, nonzeros outside the mask)."""
    tx = sp.sparsifier(method, optax.sgd(0.05, momentum=0.9), **cfg)
    state = tx.init(params)

    def stats(state, params):
        m = sp.get_masks(state)
        counts = {name: jnp.sum(m[name]["kernel"]) for name in SHAPES}
        leaks = sum(jnp.sum(jnp.where(mm, 0, pp != 0))
                    for mm, pp in zip(jax.tree.leaves(m), jax.tree.leaves(params)))
        return counts, leaks

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss_fn)(params, batch, jax.nn.relu)
        updates, state = tx.update(grads, state, params, value=value)
        params = optax.apply_updates(params, updates)
        return (params, state), stats(state, params)

    init_counts, _ = stats(state, params)
    _, (counts, leaks) = jax.lax.scan(body, (params, state), None, length=steps)
    return init_counts, counts, leaks


def expected_counts(method, cfg, layer_sparsity, step):
    """Active count per layer after update ``step`` (None = after init), from the definitions."""
    out = {}
    for name, path in zip(SHAPES, PATHS):
        size = int(np.prod(SHAPES[name]))
        s = layer_sparsity[path]
        final = masks.keep_count(size, 1.0 - s)
        if method == "dense":
            out[name] = size
        elif method in ("static", "set", "rigl"):
            out[name] = final
        elif method == "one_shot":
            out[name] = final if step is not None and step >= cfg["prune_step"] else size
        elif method in ("admm", "slr"):
            prune = cfg["dense_steps"] + cfg["penalty_steps"]
            out[name] = final if step is not None and step >= prune else size
        elif method == "gmp":
            count = size
            sched = schedules.polynomial_sparsity(s, cfg["begin_step"], cfg["end_step"])
            for t in range(0, (step if step is not None else -1) + 1):
                b, e, every = cfg["begin_step"], cfg["end_step"], cfg["every"]
                if b <= t <= e and ((t - b) % every == 0 or t == e):
                    count = min(count, masks.keep_count(size, 1.0 - float(sched(t))))
            out[name] = count
    return out


def check(method, cfg, layer_sparsities, init_counts, counts, leaks):
    for i, ls in enumerate(layer_sparsities):
        want = expected_counts(method, cfg, ls, None)
        got = {n: int(init_counts[n][i]) for n in SHAPES}
        assert got == want, (method, "init", ls, got, want)
        for t in range(STEPS):
            want = expected_counts(method, cfg, ls, t)
            got = {n: int(counts[n][i, t]) for n in SHAPES}
            assert got == want, (method, "step", t, ls, got, want)
        assert int(np.max(np.asarray(leaks)[i])) == 0, (method, ls, "non-zero pruned weight")


@pytest.mark.parametrize("method", list(CONFIGS))
def test_uniform_grid_exact_counts(method):
    params, batch = make_params(), make_batch()
    cfg = CONFIGS[method]
    sweep = jax.jit(jax.vmap(
        lambda s: run(method, cfg if method == "dense" else dict(cfg, sparsity=s), params, batch)))
    grid = jnp.asarray(GRID, jnp.float32)
    init_counts, counts, leaks = sweep(grid)
    layer_sparsities = [{p: s for p in PATHS} for s in np.asarray(GRID, np.float32)]
    check(method, cfg, layer_sparsities, init_counts, counts, leaks)
    if method in ("rigl", "gmp"):
        # The vmapped sweep gives the same counts as separate (unbatched) runs.
        single = jax.jit(lambda s: run(method, dict(cfg, sparsity=s), params, batch))
        for i in (1, 7, 11):
            one_init, one_counts, _ = single(grid[i])
            for n in SHAPES:
                assert int(one_init[n]) == int(init_counts[n][i])
                np.testing.assert_array_equal(np.asarray(one_counts[n]), np.asarray(counts[n][i]))


@pytest.mark.parametrize("method", [m for m in CONFIGS if m != "dense"])
def test_erk_grid_exact_counts(method):
    params, batch = make_params(), make_batch()
    cfg = CONFIGS[method]
    erk = []
    for s in GRID:
        dens = distributions.layer_densities(params, s, "erk")
        erk.append({p: 1.0 - float(dens[p]) for p in PATHS})
    assert len({tuple(e.values()) for e in erk}) == len(GRID)
    stacked = {p: jnp.asarray([e[p] for e in erk], jnp.float32) for p in PATHS}
    sweep = jax.jit(jax.vmap(lambda d: run(method, dict(cfg, distribution=d), params, batch)))
    init_counts, counts, leaks = sweep(stacked)
    layer_sparsities = [{p: float(np.float32(e[p])) for p in PATHS} for e in erk]
    check(method, cfg, layer_sparsities, init_counts, counts, leaks)


def test_erk_by_name_matches_distribution():
    """``distribution="erk"`` gives ERK's keep counts and masks at init, over the whole grid."""
    params = make_params()
    for s in GRID:
        for method in ("rigl", "admm"):
            state = sp.sparsifier(method, optax.sgd(0.1), sparsity=s,
                                  distribution="erk").init(params)
            want = distributions.keep_counts(params, s, "erk")
            assert ([int(c) for c in jax.tree.leaves(state.keep_counts)]
                    == [int(c) for c in jax.tree.leaves(want)])
        got = [int(m.sum()) for m in jax.tree.leaves(state.masks)]
        assert got == [int(np.prod(x.shape)) for x in jax.tree.leaves(params)]  # admm: dense
        rigl_masks = sp.get_masks(sp.rigl(optax.sgd(0.1), sparsity=s, distribution="erk")
                                  .init(params))
        assert ([int(m.sum()) for m in jax.tree.leaves(rigl_masks)]
                == [int(c) for c in jax.tree.leaves(want)])


def test_erk_is_not_uniform():
    """Guards the ERK test: the grid must give layers different densities."""
    dens = distributions.layer_densities(make_params(), 0.9, "erk")
    assert len({round(float(v), 6) for v in dens.values()}) == len(PATHS)
