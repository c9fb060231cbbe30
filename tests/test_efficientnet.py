"""EfficientNet-Lite0: the torch-free legacy-checkpoint reader against a hand-written file with
non-contiguous strides, the port against ImageNet predictions on scikit-learn's sample images,
and the family (one-example loss, per-example gradients of the expansion convs)."""

import collections
import pickle
import struct
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zkapex_jax import family
from zkapex_jax._errors import ArtifactError
from conftest import jit_per_example_grads
from zkapex_jax.models import efficientnet as E


def _write_legacy(path, tensors: dict):
    """A legacy (pre-1.6) torch file written without torch: tensors given as (storage array,
    offset, size, stride); storages are shared by identity."""
    fake_utils = types.ModuleType("torch._utils")
    fake_torch = types.ModuleType("torch")

    def _rebuild_tensor_v2(*a):  # pragma: no cover - only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class FloatStorage:
        pass

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    fake_torch.FloatStorage = FloatStorage
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules.update({"torch": fake_torch, "torch._utils": fake_utils})
    storages = {}

    class Ref:
        def __init__(self, arr):
            self.arr = arr

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Ref):
                key = str(id(obj.arr))
                storages[key] = obj.arr
                return ("storage", FloatStorage, key, "cpu", obj.arr.size, None)
            return None

    class T:
        def __init__(self, arr, offset, size, stride):
            self.args = (Ref(arr), offset, size, stride, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    try:
        with open(path, "wb") as f:
            pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
            pickle.dump(1001, f, protocol=2)
            pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
            P(f, protocol=2).dump(collections.OrderedDict((k, T(*v)) for k, v in tensors.items()))
            keys = list(storages)
            pickle.dump(keys, f, protocol=2)
            for k in keys:
                f.write(struct.pack("<q", storages[k].size))
                f.write(storages[k].astype("<f4").tobytes())
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_legacy_reader_honours_offsets_and_strides(tmp_path):
    buf = np.arange(30, dtype=np.float32)
    other = np.linspace(-1, 1, 8, dtype=np.float32)
    _write_legacy(tmp_path / "w.pth", {
        "a": (buf, 0, (5, 6), (6, 1)),          # contiguous
        "a_t": (buf, 0, (6, 5), (1, 6)),        # the transpose of a: non-contiguous view
        "sub": (buf, 7, (2, 3), (6, 2)),        # offset and a step of 2
        "b": (other, 0, (2, 2, 2), (4, 2, 1)),
    })
    sd = E.load_torch_legacy(tmp_path / "w.pth")
    np.testing.assert_array_equal(sd["a"], buf.reshape(5, 6))
    np.testing.assert_array_equal(sd["a_t"], buf.reshape(5, 6).T)
    np.testing.assert_array_equal(sd["sub"], buf.reshape(5, 6)[1:3, 1::2])
    np.testing.assert_array_equal(sd["b"], other.reshape(2, 2, 2))
    assert not np.array_equal(sd["a_t"], buf.reshape(6, 5))  # a plain reshape would be wrong


def test_legacy_reader_refuses_code_and_corruption(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({}, f, protocol=2)
        f.write(b"cos\nsystem\n(S'echo pwned'\ntR.")  # os.system('echo pwned')
    with pytest.raises(ArtifactError, match="refusing"):
        E.load_torch_legacy(p)
    _write_legacy(tmp_path / "w.pth", {"a": (np.arange(12, dtype=np.float32), 0, (3, 4), (4, 1))})
    raw = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(raw[:-8])
    with pytest.raises(ArtifactError, match="truncated"):
        E.load_torch_legacy(tmp_path / "cut.pth")
    _write_legacy(tmp_path / "oob.pth", {"a": (np.arange(12, dtype=np.float32), 4, (3, 4), (4, 1))})
    with pytest.raises(ArtifactError, match="outside"):
        E.load_torch_legacy(tmp_path / "oob.pth")


@pytest.fixture(scope="module")
def pretrained():
    try:
        return E.pretrained_lite0()
    except E.DataNotFoundError as e:  # pragma: no cover - setup.sh installs the package
        pytest.fail(str(e))


def _sample_images(size=224):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for img in load_sample_images().images:  # china.jpg, flower.jpg
        im = Image.fromarray(img)
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size),
                                                                                              Image.BILINEAR)
        out.append(np.asarray(im, np.float32) / 255.0)
    return np.stack(out)


# ImageNet-1k indices of plausible labels
CHINA = {698: "palace", 442: "bell cote", 663: "monastery", 832: "stupa", 497: "church", 483: "castle",
         538: "dome", 668: "mosque", 975: "lakeside", 449: "boathouse"}
FLOWER = {985: "daisy", 947: "mushroom", 996: "hen-of-the-woods", 309: "bee", 738: "pot", 883: "vase",
          984: "rapeseed", 716: "picket fence"}


@pytest.mark.slow  # ~30 s of full-resolution inference on 2 cores; CI runs it
def test_imagenet_predictions_on_the_sample_images(pretrained):
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(pretrained))
    assert n_params == 4_631_000  # 4.69 M in the checkpoint, less the folded batch-norm statistics
    probs = np.asarray(jax.nn.softmax(E.apply(E.EfficientNetConfig(), pretrained, jnp.asarray(_sample_images()))))
    top5 = np.argsort(-probs, axis=1)[:, :5]
    # measured: china -> palace 0.32, bell cote 0.24, monastery, lakeside, boathouse;
    #           flower -> daisy 0.22, mushroom, hen-of-the-woods, bee, pot
    assert top5[0, 0] in CHINA and sum(int(t) in CHINA for t in top5[0]) >= 4, top5[0]
    assert top5[1, 0] in FLOWER and sum(int(t) in FLOWER for t in top5[1]) >= 3, top5[1]
    # the negative control: reading the weights without their strides gives garbage
    sd = E.load_torch_legacy(E.lite0_weights_path())
    scrambled = {k: np.ascontiguousarray(v).ravel(order="F").reshape(v.shape) if v.ndim == 4 and v.shape[2] > 1 else v
                 for k, v in sd.items()}
    bad = E.from_torch_state_dict(scrambled, E.EfficientNetConfig())
    pb = np.asarray(jax.nn.softmax(E.apply(E.EfficientNetConfig(), bad, jnp.asarray(_sample_images()))))
    assert pb[0].argmax() not in CHINA or pb[1].argmax() not in FLOWER


def test_family_frozen_features_and_per_example_grads(pretrained):
    """The studies' form (frozen pretrained stem and blocks < k, cached inputs): per-example
    gradients of the trainable expansion kernels equal jax.grad of each example's loss."""
    fam = family("efficientnet-lite0", image_size=32, num_labels=10, features_from=14)
    params = fam.pretrained_fn(0)
    assert sorted(params["blocks"]) == ["14", "15"]
    rng = np.random.default_rng(0)
    x = fam.prepare(rng.random((3, 28, 28, 1), dtype=np.float32))   # grey 28 px → RGB 32 px → block 14's input
    y = np.array([1, 4, 7], np.int32)
    g = jit_per_example_grads(fam.loss, params, (x, y), wrt=fam.mask_patterns)
    assert sorted(g) == ["blocks/14/expand/kernel", "blocks/15/expand/kernel"]
    assert g["blocks/15/expand/kernel"].shape == (3, 192, 1152)
    g1 = jax.jit(jax.grad(fam.loss))(params, (x[1], y[1]))["blocks"]["15"]["expand"]["kernel"]
    np.testing.assert_allclose(np.asarray(g["blocks/15/expand/kernel"][1]), np.asarray(g1), rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_family_fine_tuning_shapes_and_per_example_grads(pretrained):
    fam = family("efficientnet-lite0", image_size=32, num_labels=10)
    params = E.pretrained_lite0(num_labels=10, key=jax.random.PRNGKey(0))
    assert jax.tree.structure(params) == jax.tree.structure(fam.init(0))
    rng = np.random.default_rng(0)
    x = rng.random((3, 32, 32, 3), dtype=np.float32)
    y = np.array([1, 4, 7], np.int32)
    assert np.isfinite(float(fam.loss(params, (x[0], y[0]))))
    g = jit_per_example_grads(fam.loss, params, (x, y), wrt=fam.mask_patterns)
    assert len(g) == 15 and g["blocks/1/expand/kernel"].shape == (3, 16, 96)
    # the per-example gradient of one example equals jax.grad of its loss (summed over positions)
    g0 = jax.jit(jax.grad(fam.loss))(params, (x[0], y[0]))["blocks"]["1"]["expand"]["kernel"]
    np.testing.assert_allclose(np.asarray(g["blocks/1/expand/kernel"][0]), np.asarray(g0), rtol=1e-4, atol=1e-7)
    with pytest.raises(Exception, match="does not fit"):
        fam.predict(params, jnp.zeros((1, 28, 28, 1)))


@pytest.mark.parametrize("padding", ["same", "symmetric"])
@pytest.mark.parametrize("k,s,h", [(3, 1, 7), (3, 2, 8), (5, 2, 9), (5, 1, 4)])
def test_depthwise_equals_lax_grouped_conv(padding, k, s, h):
    from jax import lax

    rng = np.random.default_rng(k * 10 + s)
    x = jnp.asarray(rng.normal(size=(2, h, h, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 1, 6)), jnp.float32)
    pad = "SAME" if padding == "same" else [((k - 1) // 2,) * 2] * 2
    want = lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=6, precision=lax.Precision.HIGHEST)
    np.testing.assert_allclose(np.asarray(E._depthwise(x, w, s, padding)), np.asarray(want), rtol=1e-5, atol=1e-5)
