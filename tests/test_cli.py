"""The real entry points: console script, packaging, weights commands, Poisson command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "jaxblend", *args],
        capture_output=True, text=True, timeout=600, cwd=cwd, env=env,
    )  # fmt: skip


def test_non_editable_install_finds_shipped_weights_and_examples(tmp_path):
    """A plain (non-editable) `pip install .` carries the weights and the example."""
    target = tmp_path / "site"
    p = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    code = (
        "import jaxblend, jaxblend.vgg as v, jaxblend.io as io;"
        "m = v.load_vgg('vgg16');"
        "assert 'site' in str(m.path), m.path;"
        "assert (io.EXAMPLES_DIR / 'case1' / 'source.png').exists();"
        "print(m.arch, m.preprocessing, sorted(m.params['params'])[-1])"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    q = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert q.returncode == 0, q.stderr[-2000:]
    assert q.stdout.split() == ["vgg16", "caffe", "conv4_3"]


def test_weights_convert_cli_and_bad_file(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    sd = {
        "features.0.weight": torch.randn(64, 3, 3, 3, generator=g),
        "features.0.bias": torch.randn(64, generator=g),
        "features.2.weight": torch.randn(64, 64, 3, 3, generator=g),
        "features.2.bias": torch.randn(64, generator=g),
    }
    src = tmp_path / "tiny.pth"
    torch.save(sd, src)
    out = tmp_path / "tiny.safetensors"
    p = run("weights", "convert", str(src), "--arch", "vgg19", "--upto", "conv1_2", "-o", str(out))
    assert p.returncode == 0, p.stderr
    from jaxblend.weights import load_weights

    params, meta = load_weights(out)
    np.testing.assert_allclose(
        params["params"]["conv1_2"]["kernel"], sd["features.2.weight"].numpy().transpose(2, 3, 1, 0)
    )
    assert meta["arch"] == "vgg19" and meta["preprocessing"] == "torch"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a checkpoint")
    p = run("weights", "convert", str(junk), "--arch", "vgg16", "-o", str(tmp_path / "x.st"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.pth" in lines[0] and "Traceback" not in p.stderr


def test_missing_vgg19_says_how_to_get_it(tmp_path):
    env = {**os.environ, "JAXBLEND_CACHE": str(tmp_path)}
    img = tmp_path / "a.png"
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(img)
    m = tmp_path / "m.png"
    Image.fromarray(np.pad(np.full((4, 4), 255, np.uint8), 6)).save(m)
    p = run("blend", "--source", str(img), "--mask", str(m), "--target", str(img),
            "--canvas", "16", "--vgg", "vgg19", "-o", str(tmp_path / "o.png"), env=env)  # fmt: skip
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "jaxblend weights fetch vgg19" in lines[0]


def test_poisson_cli(tmp_path, case1):
    out = tmp_path / "p.png"
    p = run(
        "poisson", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
        "--target", str(case1 / "target.png"), "--center", "30,34", "--canvas", "64",
        "--source-size", "36", "--mode", "mixed", "-o", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert np.asarray(Image.open(out)).shape == (64, 64, 3)
    p = run(
        "poisson", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
        "--target", str(case1 / "target.png"), "--center", "3,3", "--canvas", "64",
        "--source-size", "36", "-o", str(tmp_path / "q.png"),
    )  # fmt: skip
    assert p.returncode == 2 and "outside" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "q.png").exists()
    # --screen: the screened solve (differs from the classical one); a bad value is exit 2
    base = ("poisson", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
            "--target", str(case1 / "target.png"), "--center", "30,34", "--canvas", "64",
            "--source-size", "36")  # fmt: skip
    for name, screen in (("c.png", "0"), ("s.png", "8")):
        p = run(*base, "--screen", screen, "-o", str(tmp_path / name))
        assert p.returncode == 0, p.stderr
    a, b = (np.asarray(Image.open(tmp_path / n), np.float32) for n in ("c.png", "s.png"))
    assert np.abs(a - b).max() > 5
    p = run(*base, "--screen", "-1", "-o", str(tmp_path / "r.png"))
    assert p.returncode == 2 and "--screen" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.png").exists()


def _cache_env(cache, **extra):
    env = {k: v for k, v in os.environ.items() if k != "JAXBLEND_COMPILE_CACHE"}
    return {**env, "JAXBLEND_CACHE_DIR": str(cache), **extra}


def _entries(cache):
    return {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} if cache.exists() else {}


def test_compile_cache_fills_then_serves_the_same_programs(tmp_path, case1):
    """The first blend writes every compiled program; the second loads them, same bytes."""
    cache = tmp_path / "xla"
    args = ("blend", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
            "--target", str(case1 / "target.png"), "--center", "13,15", "--canvas", "32",
            "--source-size", "18", "--steps", "2", "2", "--quiet")  # fmt: skip
    p = run(*args, "-o", str(tmp_path / "a.png"), env=_cache_env(cache))
    assert p.returncode == 0, p.stderr
    first = _entries(cache)
    assert len(first) >= 3, first  # VGG objective programs of both stages, Poisson start, ...
    assert not any(n.startswith(".write-test") for n in first)
    p = run(*args, "-o", str(tmp_path / "b.png"), env=_cache_env(cache))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    # A program compiled again would be written again (new mtime) or under a new key.
    assert _entries(cache) == first


def test_compile_cache_off_switches_and_unwritable_folder(tmp_path, case1):
    # --quiet: no progress lines, so stderr holds only warnings
    args = ("poisson", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
            "--target", str(case1 / "target.png"), "--center", "30,34", "--canvas", "64",
            "--source-size", "36", "--quiet")  # fmt: skip
    cache = tmp_path / "xla"
    p = run(*args, "--no-compile-cache", "-o", str(tmp_path / "a.png"), env=_cache_env(cache))
    assert p.returncode == 0, p.stderr
    env = _cache_env(cache, JAXBLEND_COMPILE_CACHE="0")
    p = run(*args, "-o", str(tmp_path / "b.png"), env=env)
    assert p.returncode == 0, p.stderr
    assert _entries(cache) == {}
    p = run(*args, "-o", str(tmp_path / "c.png"), env=_cache_env(cache))  # on by default
    assert p.returncode == 0, p.stderr
    assert len(_entries(cache)) >= 1
    # A folder that cannot be created (its parent is a file): one warning line, same result.
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    p = run(*args, "-o", str(tmp_path / "d.png"), env=_cache_env(blocker / "xla"))
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxblend: warning: compilation cache off")
    assert str(blocker / "xla") in lines[0]
    ref = (tmp_path / "a.png").read_bytes()
    assert all((tmp_path / f"{c}.png").read_bytes() == ref for c in "bcd")


# --------------------------------------------------------------------------- issue 16


@pytest.fixture
def rgba_cutout(case1, tmp_path):
    """case1's source with its mask as alpha, and that alpha saved as a grey mask."""
    src = np.asarray(Image.open(case1 / "source.png").convert("RGB"))
    alpha = np.asarray(Image.open(case1 / "mask.png").convert("L"))
    Image.fromarray(np.dstack([src, alpha])).save(tmp_path / "cut.png")
    Image.fromarray(alpha).save(tmp_path / "alpha.png")
    return tmp_path / "cut.png", tmp_path / "alpha.png"


def test_rgba_source_without_mask_blends_like_its_alpha_as_mask(tmp_path, case1, rgba_cutout):
    """blend and poisson: no --mask on an RGBA cutout = its alpha passed as --mask; and the
    progress written to a pipe (not a terminal) is plain lines, one per phase and update."""
    cut, alpha = rgba_cutout
    place = ("--target", str(case1 / "target.png"), "--center", "13,15", "--canvas", "32",
             "--source-size", "18")  # fmt: skip
    blend = ("blend", "--source", str(cut), *place, "--steps", "1", "1")
    p = run(*blend, "-o", str(tmp_path / "a.png"))
    assert p.returncode == 0, p.stderr
    q = run(*blend, "--mask", str(alpha), "-o", str(tmp_path / "b.png"))
    assert q.returncode == 0, q.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert "\r" not in p.stderr
    for phase in ("loaded weights", "Poisson start", "stage1: compiling", "stage1 [",
                  "stage2: compiling", "stage2 [", "writing"):  # fmt: skip
        assert phase in p.stderr, (phase, p.stderr)
    assert "eta 0.0s" not in p.stderr
    pois = ("poisson", "--source", str(cut), *place, "--quiet")
    p = run(*pois, "-o", str(tmp_path / "c.png"))
    q = run(*pois, "--mask", str(alpha), "-o", str(tmp_path / "d.png"))
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    assert p.stderr == ""  # --quiet
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "d.png").read_bytes()
    p = run("poisson", "--source", str(case1 / "source.png"), *place, "-o", str(tmp_path / "e.png"))
    assert p.returncode == 2 and "no alpha channel" in p.stderr and "Traceback" not in p.stderr


def _subcommands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


def test_help_of_every_subcommand_shows_each_default():
    import argparse

    from jaxblend.cli import _parser

    seen = 0
    for name, sub in _subcommands(_parser()):
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.option_strings)
            if action.required:
                continue
            fmt = sub._get_formatter()
            fmt.add_argument(action)
            text = " ".join(fmt.format_help().split())
            assert "default" in text, (name, text)
            seen += 1
    assert seen > 30
    # the real entry point, with the values of BlendConfig's defaults
    from jaxblend.config import BlendConfig

    c = BlendConfig()
    p = run("blend", "--help")
    text = " ".join(p.stdout.split())
    own = "for the default one)"
    for shown in (f"(default: {c.canvas})", f"(default: {c.seed})", "(default: default)",
                  f"(default: the preset's, {c.stage1.steps} {c.stage2.steps} {own}",
                  f"(default: the preset's, {c.init} {own}",
                  f"(default: the preset's, {c.solver} {own}",
                  f"(default: the preset's, {c.precision} {own}",
                  "(default: the canvas centre)",
                  "(default: the source's own size)",
                  "(default: the source's alpha channel"):  # fmt: skip
        assert shown in text, shown
    p = run("batch", "--help")
    for field in ("id", "source", "mask", "target", "center", "canvas", "source_size", "steps",
                  "init", "seed", "mask_threshold"):  # fmt: skip
        assert f"\n  {field} " in p.stdout, field
    assert '{"id": "cat1", "source": "src/cat.png"' in p.stdout
    p = run("mask", "--help")
    assert "pip install opencv-python-headless" in " ".join(p.stdout.split())


def test_version_and_negative_center():
    from importlib.metadata import version

    from jaxblend.cli import _join_negative_numbers, _parser

    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"jaxblend {version('jaxblend')}"
    argv = ["place", "--source", "s.png", "--target", "t.png", "--center", "-20,32", "-o", "o.png"]
    args = _parser().parse_args(_join_negative_numbers(argv))
    assert args.center == (-20.0, 32.0)
    argv = [
        "mask",
        "--source",
        "s.png",
        "--method",
        "grabcut",
        "--rect",
        "-1,2,30,40",
        "-o",
        "m.png",
    ]
    assert _parser().parse_args(_join_negative_numbers(argv)).rect == (-1, 2, 30, 40)


def test_place_previews_and_prints_the_manifest_line(tmp_path, case1, rgba_cutout):
    import json

    from jaxblend.batch import _layout, job_config, read_manifest
    from jaxblend.config import BlendConfig
    from jaxblend.masks import OUTLINE

    cut, _ = rgba_cutout
    args = ("place", "--source", "cut.png", "--target", str(case1 / "target.png"),
            "--canvas", "64", "--source-size", "36", "-o", "prev.png")  # fmt: skip
    p = run(*args, "--center", "30,34", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    line = json.loads(p.stdout)
    assert line == {"id": "cut", "source": "cut.png", "target": str(case1 / "target.png"),
                    "center": [30, 34], "canvas": 64, "source_size": 36}  # fmt: skip
    prev = np.asarray(Image.open(tmp_path / "prev.png"))
    assert prev.shape == (64, 64, 3) and (prev == OUTLINE).all(-1).any()
    # the line is a job for `jaxblend batch`, laid out just as the preview was
    (tmp_path / "jobs.jsonl").write_text(p.stdout)
    (job,) = read_manifest(tmp_path / "jobs.jsonl")
    laid = _layout(job, job_config(BlendConfig(), job))
    assert laid.placement == (12, 16, 36, 36)
    # a negative centre parses (and is then refused as outside the canvas, in one line)
    p = run(*args, "--center", "-20,32", cwd=tmp_path)
    assert p.returncode == 2 and "outside the 64x64 canvas" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_canvas_target_keeps_the_targets_own_size(tmp_path, case1):
    """``--canvas target`` lays the job out on the target at its own size (no resize),
    and the manifest line it prints keeps that for `jaxblend batch`."""
    import json

    from jaxblend.batch import _layout, job_config, read_manifest
    from jaxblend.config import BlendConfig

    t = np.asarray(Image.open(case1 / "target.png").convert("RGB"))[:48, :60]
    Image.fromarray(t).save(tmp_path / "t.png")
    args = ("place", "--source", str(case1 / "source.png"), "--mask", str(case1 / "mask.png"),
            "--target", "t.png", "--source-size", "30", "--center", "24,30",
            "-o", "prev.png")  # fmt: skip
    p = run(*args, "--canvas", "target", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert np.asarray(Image.open(tmp_path / "prev.png")).shape == (48, 60, 3)
    line = json.loads(p.stdout)
    assert line["canvas"] == "target"
    (tmp_path / "jobs.jsonl").write_text(p.stdout)
    (job,) = read_manifest(tmp_path / "jobs.jsonl")
    assert _layout(job, job_config(BlendConfig(), job)).target.shape == (48, 60, 3)
    p = run(*args, "--canvas", "big", cwd=tmp_path)
    assert p.returncode == 2 and "'target'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_cli_outputs_follow_the_umask(tmp_path, case1, umask, mode):
    p = subprocess.run(
        [sys.executable, "-m", "jaxblend", "place", "--source", str(case1 / "source.png"),
         "--mask", str(case1 / "mask.png"), "--target", str(case1 / "target.png"),
         "--canvas", "64", "--source-size", "36", "-o", str(tmp_path / "p.png")],
        capture_output=True, text=True, timeout=600, umask=umask,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "p.png").stat().st_mode & 0o777 == mode


def test_soft_mask_warning_on_the_command_line(tmp_path, case1):
    m = np.asarray(Image.open(case1 / "mask.png"))
    Image.fromarray(m).save(tmp_path / "mask.jpg", quality=60)
    args = ("place", "--source", str(case1 / "source.png"), "--mask", str(tmp_path / "mask.jpg"),
            "--target", str(case1 / "target.png"), "--canvas", "64", "--source-size", "36",
            "-o", str(tmp_path / "p.png"))  # fmt: skip
    p = run(*args)
    assert p.returncode == 0, p.stderr
    warn = [ln for ln in p.stderr.splitlines() if ln.startswith("jaxblend: warning:")]
    assert len(warn) == 1 and "% of the image's pixels" in warn[0] and "--mask-threshold" in warn[0]
    p = run(*args, "--mask-threshold", "127")
    assert p.returncode == 0 and "jaxblend: warning" not in p.stderr
    assert '"mask_threshold": 127' in p.stdout


def test_blend_preset_and_style_strength_reach_the_config():
    """``--preset`` is the base the other options change (its own steps, start and solver
    unless given), ``--style-strength`` scales the style; a bad strength is a usage error."""
    from jaxblend.cli import _config_from_args, _parser
    from jaxblend.presets import preset

    base = ["blend", "--source", "s.png", "--target", "t.png", "-o", "o.png"]
    parse = _parser().parse_args
    cfg = _config_from_args(parse(base + ["--preset", "authors"]))
    assert cfg == preset("authors")  # its 1000 + 1000 evaluations, randn start, torch solver
    cfg = _config_from_args(parse(base + ["--preset", "authors", "--steps", "5", "--init",
                                          "poisson", "--style-strength", "0.5"]))  # fmt: skip
    assert (cfg.stage1.steps, cfg.stage2.steps, cfg.init) == (5, 5, "poisson")
    assert cfg.style_strength == 0.5 and cfg.solver == "torch"
    assert _config_from_args(parse(base)) == preset("default")
    p = run(*base, "--style-strength", "-1")
    assert p.returncode == 2 and "--style-strength" in p.stderr and "Traceback" not in p.stderr


def test_config_file_may_start_from_a_preset(tmp_path):
    import json

    from jaxblend import InputError
    from jaxblend.batch import load_config
    from jaxblend.presets import preset

    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "paper", "canvas": 256, "stage2": {"steps": 7}}))
    cfg = load_config(f)
    want = preset("paper", canvas=256, steps2=7)
    assert cfg == want and cfg.init == "noise"
    f.write_text(json.dumps({"preset": "papers"}))
    with pytest.raises(InputError, match="preset .* must be one of"):
        load_config(f)
