"""``jdeconv target``: a printable calibration target and the conditioning it predicts.

::

    jdeconv target --size 512 --kind binary --seed 0 --kernel-size 31 -o target.png

writes an 8-bit PNG (binary: black/white pixels; noise: uniform grey levels)
with :func:`jdeconv.make_target` and, with ``--kernel-size``, prints the
:func:`jdeconv.conditioning_report` of the target for that kernel size (valid
geometry unless ``--mode``): condition number, effective rank, identifiable.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["KINDS", "add_parser", "conditioning_lines"]

#: ``make_target`` kinds.
KINDS = ("binary", "noise")


def conditioning_lines(report) -> list[str]:
    """Printable lines of a :class:`jdeconv.ConditioningReport`."""
    k, l = report.kernel_shape
    cond = report.condition_number
    return [f"conditioning for a {k}x{l} kernel: condition number {cond:.3g}, effective rank "
            f"{report.effective_rank} of {k * l}, identifiable {bool(report.identifiable)}",
            f"unexcited kernel frequencies: {int(report.unexcited.sum())}"]


def _cmd_target(args) -> int:
    from jdeconv.experiment._process import UsageError, check_new_file, setup_jax

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise UsageError(f"output {str(out)!r} must be a .png file")
    size = args.size
    kshape = args.kernel_size
    if kshape is not None and (kshape[0] > size[0] or kshape[1] > size[1]):
        raise UsageError(f"the {kshape[0]}x{kshape[1]} kernel is larger than the "
                         f"{size[0]}x{size[1]} target")
    check_new_file(out, args.overwrite)
    setup_jax(args)
    from jdeconv import make_target
    from jdeconv.data import write_image
    from jdeconv.experiment._feedback import recorded_warnings

    with recorded_warnings() as messages:
        target = make_target(tuple(size), kind=args.kind, seed=args.seed, kernel_shape=kshape,
                             mode=args.mode)
        write_image(out, target.image, bit_depth=8, overwrite=args.overwrite)
    for message in messages:
        print(f"jdeconv: warning: {message}", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {out} {size[0]}x{size[1]} ({args.kind}, seed {args.seed}, 8-bit)")
        if target.conditioning is not None:
            for line in conditioning_lines(target.conditioning):
                print(line)
    return 0


def add_parser(sub, common, *, size, kernel_size, name, number, mode) -> None:
    """Adds the ``target`` sub-command (argument types from :mod:`jdeconv.experiment.cli`)."""
    import argparse

    t = sub.add_parser(
        "target", help="write a printable calibration target (random binary or noise)",
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common],
        description="Write a random calibration target as an 8-bit PNG and, with --kernel-size, "
        "print the conditioning it predicts for that kernel size (condition number, effective "
        "rank, identifiable).",
        epilog="example:\n  jdeconv target --size 512 --kind binary --seed 0 --kernel-size 31 "
        "-o target.png")
    t.add_argument("--size", default=(512, 512), type=size, metavar="N|MxN",
                   help="target size in pixels (default: 512)")
    t.add_argument("--kind", default="binary", type=name("target kind", KINDS),
                   metavar="binary|noise", help="binary (black/white, default) or noise (uniform "
                   "grey levels)")
    t.add_argument("--seed", type=number(int, minimum=0, maximum=2**32 - 1), default=0,
                   metavar="N", help="random seed (default: 0)")
    t.add_argument("-k", "--kernel-size", default=None, type=kernel_size, metavar="N|KxL",
                   help="report the conditioning for this kernel size")
    t.add_argument("--mode", default="valid", type=mode, metavar="MODE",
                   help="geometry of the conditioning report (default: valid)")
    t.add_argument("-o", "--output", default="target.png", metavar="FILE.png",
                   help="where to write the target (default: target.png)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing file")
    t.set_defaults(func=_cmd_target)
