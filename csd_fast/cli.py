"""The ``csd-fast`` command (also ``python -m csd_fast``): one subcommand per job."""
from __future__ import annotations

import argparse


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small teacher+student with CSD on the bundled photos and compare with bicubic",
        description="Train a small EDSR teacher and its width-0.25 student jointly with CSD on the "
        "bundled photographs (scikit-image's data files), then evaluate bicubic / student / teacher "
        "on held-out photos and write runs/demo/.",
    )
    p.add_argument("--minutes", type=float, default=8.0, help="training time budget (default 8)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: time budget only)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--vgg-weights", default=None, help="torchvision vgg19-dcbb9e9d.pth (else random VGG, with a warning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    def run(args):
        from .demo import run_demo

        run_demo(out_dir=args.out, minutes=args.minutes, steps=args.steps, vgg_weights=args.vgg_weights,
                 seed=args.seed, progress=not args.quiet)
        return 0

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csd-fast",
        description="Compress super-resolution networks by contrastive self-distillation and run the student fast.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
