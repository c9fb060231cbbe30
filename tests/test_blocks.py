"""BlockLayout: orders, concatenation, round trips and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax._errors import ShapeError, UnknownParameterError
from zkapex_jax.core.blocks import BlockLayout, flatten_leaf, unflatten_leaf


def _params():
    rng = np.random.default_rng(0)
    return {
        "enc": {
            "l0": {"fc1": {"kernel": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32), "bias": jnp.zeros(6)}},
            "l1": {"fc1": {"kernel": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32), "bias": jnp.ones(6)}},
        },
        "head": {"kernel": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)},
    }


@pytest.fixture(autouse=True)
def _strict():
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.mark.parametrize("order", ["out_in", "in_out"])
@pytest.mark.parametrize("block_size", [1, 2, 4, 8, 24])
def test_to_blocks_matches_numpy_order(order, block_size):
    params = _params()
    lay = BlockLayout.from_params(params, "enc/*/fc1/kernel", block_size, order)
    assert lay.paths == ("enc/l0/fc1/kernel", "enc/l1/fc1/kernel")
    assert lay.shapes == ((4, 6), (4, 6))
    k0 = np.asarray(params["enc"]["l0"]["fc1"]["kernel"])
    k1 = np.asarray(params["enc"]["l1"]["fc1"]["kernel"])
    vec = (lambda k: k.T.reshape(-1)) if order == "out_in" else (lambda k: k.reshape(-1))
    ref = np.concatenate([vec(k0), vec(k1)]).reshape(-1, block_size)
    flat = {"enc/l0/fc1/kernel": k0, "enc/l1/fc1/kernel": k1, "other": np.zeros(3)}
    blocks = lay.to_blocks(flat)
    assert blocks.shape == (48 // block_size, block_size) == (lay.num_blocks, lay.block_size)
    np.testing.assert_array_equal(np.asarray(blocks), ref)
    back = lay.from_blocks(blocks)
    np.testing.assert_array_equal(np.asarray(back["enc/l0/fc1/kernel"]), k0)
    np.testing.assert_array_equal(np.asarray(back["enc/l1/fc1/kernel"]), k1)


def test_out_in_blocks_run_along_input_dimension():
    # Flax (in=4, out=2): out_in block 0 of size 4 = all inputs of output unit 0 (PyTorch row 0)
    k = np.arange(8, dtype=np.float32).reshape(4, 2)
    lay = BlockLayout(("k",), ((4, 2),), 4, "out_in")
    np.testing.assert_array_equal(np.asarray(lay.to_blocks({"k": k}))[0], k[:, 0])
    lay2 = BlockLayout(("k",), ((4, 2),), 2, "in_out")
    np.testing.assert_array_equal(np.asarray(lay2.to_blocks({"k": k}))[0], k[0, :])


def test_non_2d_leaf_is_plain_reshape():
    b = np.arange(6.0, dtype=np.float32)
    for order in ("out_in", "in_out"):
        np.testing.assert_array_equal(np.asarray(flatten_leaf(b, order)), b)
    x = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(np.asarray(flatten_leaf(x, "out_in")), x.reshape(-1))
    np.testing.assert_array_equal(np.asarray(unflatten_leaf(x.reshape(-1), x.shape, "out_in")), x)


@pytest.mark.parametrize("order", ["out_in", "in_out"])
def test_batched_equals_per_example(order):
    rng = np.random.default_rng(1)
    lay = BlockLayout(("a", "b"), ((4, 6), (6,)), 3, order)
    g = {"a": rng.normal(size=(5, 4, 6)).astype(np.float32), "b": rng.normal(size=(5, 6)).astype(np.float32)}
    batched = np.asarray(lay.to_blocks_batched(g))
    assert batched.shape == (5, lay.num_blocks, 3)
    for i in range(5):
        np.testing.assert_array_equal(batched[i], np.asarray(lay.to_blocks({k: v[i] for k, v in g.items()})))


def test_bool_mask_and_jit():
    lay = BlockLayout(("a",), ((4, 6),), 4)
    m = np.zeros((4, 6), bool)
    m[1, 2] = True
    blocks = jax.jit(lay.to_blocks)({"a": m})
    assert blocks.dtype == jnp.bool_ and int(blocks.sum()) == 1
    # out_in: flat index = out * in + in = 2 * 4 + 1 = 9 -> block 2, position 1
    assert bool(blocks[2, 1])


def test_sizes_and_describe():
    lay = BlockLayout(("a", "b"), ((4, 6), (2, 4)), 4)
    assert lay.size == 32 and lay.num_blocks == 8
    assert lay.blocks_per_path == (6, 2) and lay.block_offsets == (0, 6, 8)
    assert "'b'" in lay.describe_block(7) and "block 1" in lay.describe_block(7)
    assert lay.block_ids()[6] == ("b", 0)


def test_functional_forms():
    from zkapex_jax.core.blocks import from_blocks, to_blocks

    lay = BlockLayout(("a",), ((4, 6),), 4)
    k = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(np.asarray(to_blocks(lay, {"a": k})), np.asarray(lay.to_blocks({"a": k})))
    np.testing.assert_array_equal(np.asarray(from_blocks(lay, to_blocks(lay, {"a": k}))["a"]), k)


def test_dict_round_trip():
    lay = BlockLayout(("a", "b"), ((4, 6), (2, 4)), 4, "in_out")
    assert BlockLayout.from_dict(lay.to_dict()) == lay


def test_errors():
    params = _params()
    with pytest.raises(ShapeError, match="not divisible by block_size 5"):
        BlockLayout.from_params(params, "enc/*/fc1/kernel", 5)
    with pytest.raises(UnknownParameterError, match="nope"):
        BlockLayout.from_params(params, "nope/*", 2)
    with pytest.raises(ValueError, match="order"):
        BlockLayout.from_params(params, "head/kernel", 2, "rows")
    with pytest.raises(ShapeError, match="block_size"):
        BlockLayout(("a",), ((4,),), 0)
    with pytest.raises(ShapeError, match="sorted"):
        BlockLayout(("b", "a"), ((4,), (4,)), 2)
    lay = BlockLayout(("a",), ((4, 6),), 4)
    with pytest.raises(UnknownParameterError, match="'a'"):
        lay.to_blocks({"b": np.zeros((4, 6))})
    with pytest.raises(ShapeError, match="expected shape"):
        lay.to_blocks({"a": np.zeros((6, 4))})
    with pytest.raises(ShapeError, match=r"\(N, \*"):
        lay.to_blocks_batched({"a": np.zeros((4, 6))})
    with pytest.raises(ShapeError, match="blocks of shape"):
        lay.from_blocks(np.zeros((3, 4)))
    with pytest.raises(ShapeError, match="malformed"):
        BlockLayout.from_dict({"paths": ["a"]})
