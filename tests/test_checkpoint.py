"""Checkpoints: bitwise round trips of a realistic training state, retention, atomicity, errors."""
import functools
import os
import signal
import subprocess
import sys
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import damage_checkpoint

from sparsegnn_jax import checkpoint as ckpt
from sparsegnn_jax.train import TrainState


class _Net(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(6, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


class _MaskState(NamedTuple):
    """Shaped like a sparsity wrapper's state: masks, counters, a key and the inner state."""

    masks: object
    count: jax.Array
    key: jax.Array
    inner: object


def _tx():
    return optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-2))


@functools.lru_cache(maxsize=None)  # states are never mutated by the tests; saves compile time
def _make_state(hidden: int = 8, steps: int = 3, seed: int = 0):
    """A TrainState after a few real optimizer steps, so every leaf holds non-trivial values."""
    _, params, _ = nnx.split(_Net(hidden, nnx.Rngs(seed)), nnx.Param, ...)
    tx = _tx()
    inner = tx.init(params)
    masks = jax.tree.map(lambda p: p > 0, params)
    x = jax.random.normal(jax.random.key(seed + 1), (5, 6))
    graphdef = nnx.graphdef(_Net(hidden, nnx.Rngs(seed)))

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    @jax.jit  # one compile instead of many eager op dispatches keeps the file fast
    def train_step(params, inner):
        updates, inner = tx.update(jax.grad(loss)(params), inner, params)
        return optax.apply_updates(params, updates), inner

    for _ in range(steps):
        params, inner = train_step(params, inner)
    # Values that a float round trip through text or a cast would not preserve bitwise.
    params["l1"]["bias"][...] = params["l1"]["bias"][...].at[0].set(-0.0).at[1].set(jnp.nan)
    opt_state = _MaskState(masks, jnp.int32(7), jax.random.key(42), inner)
    return TrainState(params, opt_state, jax.random.split(jax.random.key(seed))[1],
                      jnp.asarray(steps, jnp.int32))


def _bits(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def _assert_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        assert _is_key(x) == _is_key(y)
        if _is_key(x):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
        assert x.dtype == y.dtype
        assert _bits(x) == _bits(y)


def _is_key(x):
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def test_round_trip_is_bitwise(tmp_path):
    state = _make_state()
    meta = {"epoch": 3, "best_val": 0.8125, "config": {"method": "rigl", "sparsity": 0.9,
                                                       "hidden": [128, 64], "seed": None}}
    path = ckpt.save(tmp_path, 30, state, meta)
    assert path == tmp_path / "step_00000030" and path.is_dir()
    assert ckpt.latest_step(tmp_path) == 30

    target = _make_state(seed=5, steps=1)  # same structure, different values
    restored, meta_back = ckpt.restore(tmp_path, target)
    _assert_bitwise_equal(restored, state)
    assert meta_back == meta
    assert isinstance(restored, TrainState) and isinstance(restored.opt_state, _MaskState)
    assert isinstance(restored.params, nnx.State)
    assert isinstance(restored.opt_state.inner[0], optax.EmptyState)
    assert isinstance(restored.opt_state.inner[1][0], optax.ScaleByAdamState)
    assert restored.opt_state.masks["l1"]["kernel"][...].dtype == jnp.bool_
    assert restored.step.dtype == jnp.int32 and int(restored.step) == 3
    assert int(restored.opt_state.inner[1][0].count) == 3
    assert np.isnan(np.asarray(restored.params["l1"]["bias"][...][1]))
    assert np.signbit(np.asarray(restored.params["l1"]["bias"][...][0]))


def test_restored_state_continues_identically(tmp_path):
    """A jitted optimizer step from the restored state equals one from the original, bit for bit."""
    state = _make_state()
    ckpt.save(tmp_path, 1, state)
    restored, _ = ckpt.restore(tmp_path, _make_state(seed=9))
    tx = _tx()

    @jax.jit
    def step(s):
        grads = jax.tree.map(jnp.ones_like, s.params)
        updates, inner = tx.update(grads, s.opt_state.inner, s.params)
        key, sub = jax.random.split(s.opt_state.key)
        return optax.apply_updates(s.params, updates), inner, jax.random.uniform(sub)

    _assert_bitwise_equal(step(restored), step(state))


def test_numpy_and_python_scalar_leaves_keep_their_types(tmp_path):
    state = {"np": np.arange(5, dtype=np.int64), "i": 3, "f": 0.1, "b": True,
             "u8": jnp.arange(4, dtype=jnp.uint8), "empty": jnp.zeros((0, 3))}
    ckpt.save(tmp_path, 0, state)
    restored, meta = ckpt.restore(tmp_path, {"np": np.zeros(5, np.int64), "i": 0, "f": 0.0,
                                             "b": False, "u8": jnp.zeros(4, jnp.uint8),
                                             "empty": jnp.ones((0, 3))})
    assert meta == {}
    assert isinstance(restored["np"], np.ndarray) and restored["np"].tolist() == [0, 1, 2, 3, 4]
    assert restored["i"] == 3 and type(restored["i"]) is int
    assert restored["f"] == 0.1 and type(restored["f"]) is float
    assert restored["b"] is True
    assert restored["u8"].dtype == jnp.uint8 and restored["empty"].shape == (0, 3)


def test_only_last_keep_checkpoints_remain(tmp_path):
    state = {"w": jnp.arange(3.0)}
    for step in range(1, 6):
        ckpt.save(tmp_path, step * 10, {"w": state["w"] + step})
    assert ckpt.list_steps(tmp_path) == [40, 50]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000040", "step_00000050"]
    restored, _ = ckpt.restore(tmp_path, state, step=40)
    assert restored["w"].tolist() == [4.0, 5.0, 6.0]

    for step in range(6, 9):
        ckpt.save(tmp_path, step * 10, state, keep=3)
    assert ckpt.list_steps(tmp_path) == [60, 70, 80]


def test_saving_same_step_again_replaces_it(tmp_path):
    ckpt.save(tmp_path, 5, {"w": jnp.zeros(2)}, {"v": 1})
    ckpt.save(tmp_path, 5, {"w": jnp.ones(2)}, {"v": 2})
    restored, meta = ckpt.restore(tmp_path, {"w": jnp.zeros(2)})
    assert restored["w"].tolist() == [1.0, 1.0] and meta == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000005"]


def _crash_at_commit(error, step_folder="step_00000020"):
    """An os.rename that raises ``error`` instead of making ``step_folder`` visible.

    The save dies with everything written, at the one rename that commits the checkpoint.
    """
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(dst) == step_folder:
            raise error
        real_rename(src, dst)
    return rename


def test_interrupted_rename_leaves_previous_checkpoint(tmp_path, monkeypatch):
    state = _make_state()
    ckpt.save(tmp_path, 10, state, {"epoch": 1})

    monkeypatch.setattr(os, "rename", _crash_at_commit(
        OSError("simulated crash before the checkpoint became visible")))
    with pytest.raises(OSError, match="simulated crash"):
        ckpt.save(tmp_path, 20, _make_state(seed=3), {"epoch": 2})
    monkeypatch.undo()

    assert ckpt.latest_step(tmp_path) == 10
    assert ckpt.list_steps(tmp_path) == [10]
    restored, meta = ckpt.restore(tmp_path, _make_state(seed=3))
    _assert_bitwise_equal(restored, state)
    assert meta == {"epoch": 1}


def test_killed_save_leftovers_are_invisible_and_cleaned(tmp_path, monkeypatch):
    """A process killed mid-save leaves a temp folder with the arrays but no checkpoint."""
    ckpt.save(tmp_path, 10, {"w": jnp.arange(4.0)})

    # KeyboardInterrupt stands in for the process dying right before the commit.
    monkeypatch.setattr(os, "rename", _crash_at_commit(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path, 20, {"w": jnp.zeros(4)})
    monkeypatch.undo()

    leftovers = [p for p in tmp_path.iterdir() if p.name != "step_00000010"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith("step_00000020.")
    assert (leftovers[0] / "state").is_dir() and (leftovers[0] / "meta").is_dir()
    assert ckpt.latest_step(tmp_path) == 10
    restored, _ = ckpt.restore(tmp_path, {"w": jnp.zeros(4)})
    assert restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0]

    ckpt.save(tmp_path, 30, {"w": jnp.ones(4)})  # the next save removes the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000010", "step_00000030"]


def test_killed_process_mid_save_leaves_previous_checkpoint(tmp_path, cli_env):
    """A real SIGKILL between writing the arrays and the commit: nothing partial is visible."""
    ckpt.save(tmp_path, 10, {"w": jnp.arange(4.0)}, {"epoch": 1})
    script = (
        "import os, signal, sys\n"
        "import jax.numpy as jnp\n"
        "from sparsegnn_jax import checkpoint\n"
        "real_rename = os.rename\n"
        "def rename(src, dst):\n"
        "    if os.path.basename(dst) == 'step_00000020':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real_rename(src, dst)\n"
        "os.rename = rename\n"
        "checkpoint.save(sys.argv[1], 20, {'w': jnp.zeros(4)}, {'epoch': 2})\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          env=cli_env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("step_00000020.")]
    assert len(leftovers) == 1 and (leftovers[0] / "state").is_dir()
    assert ckpt.list_steps(tmp_path) == [10]
    restored, meta = ckpt.restore(tmp_path, {"w": jnp.zeros(4)})
    assert restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0] and meta == {"epoch": 1}


def test_step_directory_without_its_commit_marker_is_ignored(tmp_path):
    """Only a directory holding orbax's commit marker counts, e.g. not a half-copied one."""
    ckpt.save(tmp_path, 10, {"w": jnp.arange(2.0)})
    (tmp_path / "step_00000020" / "state").mkdir(parents=True)
    (tmp_path / "step_00000020" / "meta").mkdir()
    assert ckpt.latest_step(tmp_path) == 10
    restored, _ = ckpt.restore(tmp_path, {"w": jnp.zeros(2)})
    assert restored["w"].tolist() == [0.0, 1.0]


def test_structure_mismatch_names_both_structures(tmp_path):
    ckpt.save(tmp_path, 1, _make_state(hidden=8))
    with pytest.raises(ValueError) as err:
        ckpt.restore(tmp_path, _make_state(hidden=16))
    text = str(err.value)
    assert "does not match the target state" in text
    assert ("leaf .params['l1']['bias'].value array float32[8] stored vs "
            ".params['l1']['bias'].value array float32[16] in the target") in text
    assert "stored structure: PyTreeDef(" in text and "target structure: PyTreeDef(" in text


def test_container_only_mismatch_is_detected(tmp_path):
    """Same leaves, but a leafless optimizer state of another type (optax.masked's MaskedNode)."""
    ckpt.save(tmp_path, 1, {"opt": (optax.EmptyState(), jnp.zeros(2))})
    with pytest.raises(ValueError, match="different tree containers") as err:
        ckpt.restore(tmp_path, {"opt": (optax.MaskedNode(), jnp.zeros(2))})
    assert "namedtuple[EmptyState]" in str(err.value)
    assert "namedtuple[MaskedNode]" in str(err.value)


def test_leaf_count_and_key_impl_mismatches(tmp_path):
    ckpt.save(tmp_path, 1, {"a": jnp.zeros(2), "key": jax.random.key(0)})
    with pytest.raises(ValueError, match="2 stored leaves vs 3 in the target"):
        ckpt.restore(tmp_path, {"a": jnp.zeros(2), "b": jnp.zeros(1), "key": jax.random.key(0)})
    with pytest.raises(ValueError, match=r"key<fry>\[\] stored vs .*key<rbg>\[\] in the target"):
        ckpt.restore(tmp_path, {"a": jnp.zeros(2), "key": jax.random.key(0, impl="rbg")})
    with pytest.raises(ValueError, match=r"array int32\[2\] in the target"):
        ckpt.restore(tmp_path, {"a": jnp.zeros(2, jnp.int32), "key": jax.random.key(0)})


def test_missing_directory_and_steps(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found: .*nope"):
        ckpt.restore(missing, {"a": jnp.zeros(1)})
    assert ckpt.latest_step(missing) is None
    with pytest.raises(FileNotFoundError, match="no complete checkpoint in"):
        ckpt.restore(tmp_path, {"a": jnp.zeros(1)})
    ckpt.save(tmp_path, 3, {"a": jnp.zeros(1)})
    with pytest.raises(FileNotFoundError,
                       match=r"no checkpoint for step 4 .*available steps: \[3\]"):
        ckpt.restore(tmp_path, {"a": jnp.zeros(1)}, step=4)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        ckpt.save(tmp_path, -1, {"a": jnp.zeros(1)})
    with pytest.raises(ValueError, match="keep must be an int >= 1"):
        ckpt.save(tmp_path, 1, {"a": jnp.zeros(1)}, keep=0)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        ckpt.save(tmp_path, 1, {"a": jnp.zeros(1)}, {"arr": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"cannot checkpoint leaf \['s'\] of type str"):
        ckpt.save(tmp_path, 1, {"s": "text"})
    assert ckpt.latest_step(tmp_path) is None


@pytest.mark.parametrize("what", ["arrays", "json", "json-without-description"])
def test_unreadable_latest_step_falls_back_to_the_newest_readable(tmp_path, what):
    ckpt.save(tmp_path, 1, {"w": jnp.arange(3.0)}, {"epoch": 1})
    ckpt.save(tmp_path, 2, {"w": jnp.arange(3.0) + 10}, {"epoch": 2})
    damage_checkpoint(tmp_path / "step_00000002", what)
    with pytest.warns(ckpt.CheckpointWarning) as caught:
        restored, meta = ckpt.restore(tmp_path, {"w": jnp.zeros(3)})
    assert restored["w"].tolist() == [0.0, 1.0, 2.0] and meta == {"epoch": 1}
    [warning] = caught
    text = str(warning.message)
    assert text.startswith(f"checkpoint {tmp_path / 'step_00000002'} is unreadable (")
    assert text.endswith("; using step 1 instead") and len(text) < 600
    if what != "arrays":
        with pytest.warns(ckpt.CheckpointWarning, match="step_00000002 is unreadable"):
            assert ckpt.read_metadata(tmp_path) == (1, {"epoch": 1})
    # Asked for by number, the damaged step is an error naming it, not a fallback.
    with pytest.raises(ckpt.UnreadableCheckpointError, match=r"step_00000002 is unreadable"):
        ckpt.restore(tmp_path, {"w": jnp.zeros(3)}, step=2)


def test_every_step_unreadable_is_an_error_naming_the_oldest(tmp_path):
    ckpt.save(tmp_path, 1, {"w": jnp.arange(3.0)}, {"epoch": 1})
    damage_checkpoint(tmp_path / "step_00000001", "arrays")
    with pytest.raises(ckpt.UnreadableCheckpointError,
                       match=r"^checkpoint .*step_00000001 is unreadable \(ValueError: "):
        ckpt.restore(tmp_path, {"w": jnp.zeros(3)})


def test_a_mismatch_is_not_mistaken_fordamage_checkpoint(tmp_path):
    """A state of another shape fails on the newest step; older steps are not tried."""
    ckpt.save(tmp_path, 1, {"w": jnp.arange(3.0)})
    ckpt.save(tmp_path, 2, {"w": jnp.arange(3.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"step_00000002 does not match the target state"):
            ckpt.restore(tmp_path, {"w": jnp.zeros(4)})


def test_save_removes_only_its_own_leftovers(tmp_path):
    """Other programs' temp folders survive; empty step folders (a kill while an old step was
    deleted) go; a step folder holding files is never deleted, committed or not."""
    foreign = [".tmp-editor", ".old-backup", "x.tmp-1", "step_1", "step_000000030"]
    for name in foreign:
        (tmp_path / name).mkdir()
        (tmp_path / name / "keep.txt").write_text("not ours")
    (tmp_path / ".tmp-empty").mkdir()
    (tmp_path / "step_00000007" / "state" / "d").mkdir(parents=True)  # empty tree
    (tmp_path / "step_00000008").mkdir()
    (tmp_path / "step_00000009" / "state").mkdir(parents=True)
    (tmp_path / "step_00000009" / "state" / "half-copied").write_bytes(b"x")
    ckpt.save(tmp_path, 1, {"w": jnp.zeros(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        foreign + [".tmp-empty", "step_00000001", "step_00000009"])
    assert all((tmp_path / name / "keep.txt").read_text() == "not ours" for name in foreign)
    assert ckpt.list_steps(tmp_path) == [1]
