"""The ``csd-fast`` command (also ``python -m csd_fast``): one subcommand per job.

This module only wires argparse; each command's logic lives in ``csd_fast.commands.<name>``.
"""
from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .options import choices_of, cli_fields, option_default
from .optional import MissingDependencyError

_FMT = argparse.RawDescriptionHelpFormatter


def _runner(command: str):
    def run(args):
        return import_module(f".commands.{command}", __package__).run(args)

    return run


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small teacher+student with CSD on the bundled photos and compare with bicubic",
        description="Train a small EDSR teacher and its width-0.25 student jointly with CSD on the "
        "bundled photographs (scikit-image's data files), then evaluate bicubic / student / teacher "
        "on held-out photos and write runs/demo/.",
    )
    p.add_argument("--minutes", type=float, default=9.0, help="cap on training time; stops early with a checkpoint (default 9)")
    p.add_argument("--steps", type=int, default=800, help="training steps (default 800; the --minutes cap may stop earlier)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--vgg-weights", default=None, help="torchvision vgg19-dcbb9e9d.pth (else random VGG, with a warning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args):
        from .demo import run_demo
        from .fileio import check_writable_dir, lock_run_dir

        lock_run_dir(check_writable_dir(args.out, "--out"))
        run_demo(out_dir=args.out, minutes=args.minutes, steps=args.steps, vgg_weights=args.vgg_weights,
                 seed=args.seed, progress=not args.quiet)
        return 0

    p.set_defaults(func=run)


def _model_file_args(p, what: str) -> None:
    p.add_argument("--model", required=True, metavar="FILE",
                   help=f"{what}: a training checkpoint (checkpoint.pt), an exported student (.safetensors), or a "
                   "teacher state dict from EDSR-PyTorch / BasicSR (EDSR, RCAN) / official CARN / official CSD")
    p.add_argument("--scale", type=int, default=None, help="scale of a multi-scale CARN checkpoint (else read from the file)")
    p.add_argument("--res-scale", type=float, default=None,
                   help="EDSR residual scaling of a foreign checkpoint (default 0.1 for 256 features, else 1.0)")
    p.add_argument("--rgb-range", type=float, default=None,
                   help="pixel range a foreign checkpoint was trained on (default: 255 for EDSR-PyTorch/CSD/BasicSR, 1 for CARN)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")


def _tile_args(p) -> None:
    p.add_argument("--tile", type=int, default=None, metavar="PX",
                   help="run on LR tiles of PX x PX pixels to bound memory (e.g. 256; default: whole image)")
    p.add_argument("--tile-overlap", type=int, default=16, metavar="PX",
                   help="LR pixels of context around each tile (default 16)")


def _fast_args(p, what: str) -> None:
    p.add_argument("--fast", action="store_true",
                   help=f"{what} through csd_fast.accelerate (fused Triton kernels on CUDA; on CPU native C++ kernels or oneDNN, per layer the faster)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="with --fast: compute dtype (default: the model's; float16/bfloat16 for speed on GPUs)")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="with --fast: launch the kernels one by one instead of replaying CUDA graphs")


_FLAG_NAMES = {"model_args": "--model-arg"}  # flags not spelled as their field


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train a teacher and its channel-splitting student jointly with CSD", formatter_class=_FMT,
        description="Train a teacher (EDSR/RCAN/CARN) and the student made of its first width*C channels jointly\n"
        "with contrastive self-distillation. Options come from --config FILE (YAML or JSON, keys = the\n"
        "option names with underscores, e.g. 'lambda_c: 200') and from flags, which override the file.\n"
        "Writes OUT/config.json, checkpoint.pt (resume with --resume), log.csv, training.png, student.safetensors;\n"
        "OUT must be empty unless --resume or --overwrite is given, and is locked while the run is alive.\n"
        "Multi-GPU/CPU: torchrun --nproc_per_node N -m csd_fast train ... (DDP; --batch is the global batch).",
        epilog="examples:\n"
        "  csd-fast train --bundled --arch edsr --preset demo --scale 2 --steps 2000 --patch 64 --out runs/demo_edsr\n"
        "  csd-fast train --config configs/edsr_x4.yaml --div2k data/DIV2K --val Set5 --data-root data/benchmark",
    )
    p.add_argument("--config", metavar="FILE", help="YAML (.yaml/.yml) or JSON file of options")
    groups = {}
    for f in cli_fields():  # one flag per csd_fast.TrainOptions field; unset flags do not override the file
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        flag = _FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        default = option_default(f.name, cli=True)
        shown = f" (default {default})" if default not in (None, [], {}, False) else ""
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=meta["help"] + shown)
        if f.name == "model_args":
            kw.update(action="append", metavar="KEY=VALUE")
        elif meta["kind"] is bool:
            kw.update(action="store_true")
        elif meta["item"] is not None:
            kw.update(type=meta["item"], nargs=meta["length"] or "+")
        else:
            kw.update(type=meta["kind"], choices=choices_of(meta))
        group.add_argument(flag, **kw)
    p.set_defaults(func=_runner("train"))


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval", help="PSNR/SSIM (Y, crop = scale) of teacher and student on test sets", formatter_class=_FMT,
        description="Evaluate a model file on test sets: PSNR and SSIM on Y (BT.601), crop = scale, as the SR\n"
        "papers. For a checkpoint: bicubic, the teacher and the student (its recorded width, or --width);\n"
        "for an exported student: bicubic and the student. Prints the table, writes OUT/eval.csv and eval.json.",
        epilog="example:\n  csd-fast eval --model runs/train/checkpoint.pt --data Set5 Set14 --data-root data/benchmark --plot",
    )
    _model_file_args(p, "model to evaluate")
    p.add_argument("--data", nargs="+", default=["bundled"], metavar="SET",
                   help="test sets: bundled (the held-out bundled photos, default), a folder of HR images, or "
                   "Set5/Set14/B100/Urban100/Manga109 under --data-root")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the benchmark sets")
    p.add_argument("--width", type=float, nargs="+", metavar="W",
                   help="student widths to evaluate besides the teacher (default: the checkpoint's)")
    p.add_argument("--self-ensemble", action="store_true", help="'+' results: mean over 8 flips/transposes (8x slower)")
    p.add_argument("--plot", action="store_true",
                   help="also evaluate widths 0.25/0.5/0.75/1.0 and draw PSNR vs params and vs time (OUT/tradeoff.png)")
    p.add_argument("--max-side", type=int, default=None, help="shrink bundled photos to this longer side")
    p.add_argument("--strict", action="store_true", help="stop on a corrupt image file instead of skipping it")
    p.add_argument("--out", default="runs/eval", metavar="DIR", help="where eval.csv/json go (default runs/eval)")
    _tile_args(p)
    _fast_args(p, "run (and time) the networks")
    p.set_defaults(func=_runner("eval"))


def _add_upscale(sub) -> None:
    p = sub.add_parser(
        "upscale", help="super-resolve image files or folders", formatter_class=_FMT,
        description="Super-resolve PNG/JPEG/... files and folders with a model file. RGB goes through the network;\n"
        "an alpha channel is resized with bicubic; greyscale images stay greyscale. Output is 8 bit, same format.",
        epilog="example:\n  csd-fast upscale photos/ -o photos_x4/ --model student.safetensors --tile 256",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files and/or folders of images")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (same file names), or a file name for a single input image")
    _model_file_args(p, "model to run")
    p.add_argument("--width", type=float, default=None,
                   help="for a checkpoint: width to run (default the checkpoint's student width; 1.0 = teacher)")
    _tile_args(p)
    _fast_args(p, "run")
    p.add_argument("--strict", action="store_true",
                   help="stop at an unreadable image file (default: skip it with a warning, exit status 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_runner("upscale"))


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="save the compact student of a checkpoint as one .safetensors file", formatter_class=_FMT,
        description="Cut the student (the first width*C channels of every layer) out of a checkpoint into a standalone\n"
        "model with its own weights, in one safetensors file whose metadata holds its architecture (also written\n"
        "beside it as .json). Load it with csd_fast.load_student(path); no teacher needed.",
        epilog="examples:\n  csd-fast export --model runs/train/checkpoint.pt --width 0.25 -o student.safetensors\n"
        "  csd-fast export --model student.safetensors --format onnx -o student.onnx",
    )
    _model_file_args(p, "checkpoint or teacher")
    p.add_argument("--width", type=float, default=None, help="student width (default: the checkpoint's)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output .safetensors file (.onnx with --format onnx)")
    p.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                   help="safetensors (default; csd_fast.load_student) or onnx (ONNX Runtime, OpenVINO, TensorRT: dynamic "
                   "height and width; also accepts an exported student; needs pip install 'csd_fast[onnx]')")
    p.add_argument("--opset", type=int, default=None, help="with --format onnx: ONNX opset (default 18, the lowest supported)")
    p.set_defaults(func=_runner("export"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csd-fast",
        description="Compress super-resolution networks by contrastive self-distillation and run the student fast.",
        epilog="run 'csd-fast COMMAND --help' for the options of a command",
    )
    debug_help = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_eval, _add_upscale, _add_export):
        add(sub)
    for p in sub.choices.values():  # also accepted after the command name
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def error_line(err: BaseException) -> str:
    """One line for a user or OS error: the message, or for an OSError its reason and file."""
    if isinstance(err, OSError) and err.strerror:
        files = [f for f in (err.filename, err.filename2) if f is not None]
        return err.strerror + "".join(f": {f}" for f in files)
    return " ".join(str(err).split())


def main(argv=None) -> int:
    """Run a command; user errors (bad values, missing files) and OS errors (read-only or full disk,
    permissions) end in one line on stderr and exit status 2; ``--debug`` shows the traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, MissingDependencyError) as err:
        if args.debug:
            raise
        print(f"csd-fast {args.command}: error: {error_line(err)}", file=sys.stderr)
        return 2
