"""The CNN steps: ``szviewer train`` and ``szviewer predict``."""

from __future__ import annotations

import contextlib
import sys

from szviewer.cli.common import add_executor_flags, executor, progress_bar, say
from szviewer.cnn.settings import PRESETS
from szviewer.errors import SzviewerError


@contextlib.contextmanager
def _train_bar():
    """The training's progress callback: one tqdm bar per stage (reading, training); the training stage counts the
    preset's steps and its ETA is the one train() measures ("at most ... left"), not tqdm's rate guess."""
    from tqdm import tqdm

    from szviewer.progress import check_cancel

    bar = None

    def progress(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        check_cancel(None, "train")
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc="train", leave=False, file=sys.stderr, unit="step",
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def cmd_train(args) -> int:
    from szviewer.jobs.training import train_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    with _train_bar() as progress:
        train_workspace(ws, preset=args.preset, level=args.level, device=args.device, resume=args.resume,
                        seed=args.seed, max_seconds=args.max_seconds, checkpoint_seconds=args.checkpoint_seconds,
                        overwrite=args.overwrite, estimate_only=args.estimate, progress=progress, say=say,
                        init_from=args.init_from)
    return 0


def cmd_predict(args) -> int:
    from szviewer.jobs.predict import predict_workspace
    from szviewer.workspace import Workspace

    ws = Workspace(args.workspace)
    if (args.workers or args.scheduler) and not args.dense:
        raise SzviewerError("--workers/--scheduler spread the tiles of --dense scoring; cutout scoring runs here")
    with executor(args) as ex, progress_bar("predict") as bar:
        predict_workspace(ws, model_path=args.model, level=args.level, device=args.device, precision=args.precision,
                          all_levels=args.all_levels, dense=args.dense, windowed=args.windowed,
                          distilled=args.distilled,
                          resolution_arcmin=args.resolution_arcmin, stride_arcmin=args.stride_arcmin, progress=bar,
                          overwrite=args.overwrite, say=print, executor=ex)
    return 0


def add_train(sub) -> None:
    s = sub.add_parser("train", help="train the DeepSZ CNN on a workspace's cutouts (checkpoints; --resume)")
    s.add_argument("workspace")
    s.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="quick: at most 1,200 batches of 64 (for ~100 deg^2); long: at most 8,000 batches of 128 "
                        "(1,000 deg^2 or more); paper: the paper's schedule exactly; finetune: at most 1,800 "
                        "batches of 64 at a fifth of the learning rate, for --init-from. Each is a number of steps, "
                        "so the result does not depend on the machine; how long it takes here is measured and "
                        "printed before training starts (see --estimate)")
    s.add_argument("--init-from", metavar="MODEL",
                   help="start from this model's weights instead of a random network (fine-tuning: e.g. the shipped "
                        "paper model on an act-dr6 or so-lat workspace with --preset finetune; the card records it)")
    s.add_argument("--level", default="all", help="component level to train on (default all)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--estimate", action="store_true",
                   help="only measure a few training steps here and print how long the preset can take")
    s.add_argument("--max-seconds", type=float, metavar="S",
                   help="opt-in wall-clock budget: end the current ratio and stop after S seconds (the result then "
                        "depends on the machine's speed; no preset has one)")
    s.add_argument("--checkpoint-seconds", type=float, default=120.0, metavar="S",
                   help="also write a checkpoint after S seconds of wall time (default 120), besides every few "
                        "hundred batches, so an interruption loses at most that; --resume continues exactly")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the workspace's trained model, or start again over a run's checkpoint")
    s.set_defaults(func=cmd_train)


def add_predict(sub) -> None:
    s = sub.add_parser("predict", help="score every cutout with the CNN (calibrated cnn_prob)")
    s.add_argument("workspace")
    s.add_argument("--model", metavar="PATH", help="model file (default: the workspace's own, else the shipped one)")
    s.add_argument("--level", default="all")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--all-levels", action="store_true",
                   help="score every component level (columns cnn_prob_<level>; paper Fig. 8 in the report)")
    s.add_argument("--dense", action="store_true",
                   help="also score the whole map fully convolutionally and find CNN candidates (tiled skies)")
    s.add_argument("--resolution-arcmin", type=float, default=1.0,
                   help="with --dense: grid of the fully convolutional probability map (0.25, 0.5, 1, 2 or 4 "
                        "arcmin at 0.25' pixels; default 1')")
    s.add_argument("--windowed", action="store_true",
                   help="with --dense: score each window on its own instead (the reference; --stride-arcmin)")
    s.add_argument("--distilled", action="store_true",
                   help="with --dense: the network at its own 4' stride and the model's distilled fine head "
                        "(<model>.finehead.pt, scripts/train_fine_head.py) for the 1' map: ~2x faster, "
                        "probabilities p99 0.11 from the exact map (benchmarks/RESULTS.md)")
    s.add_argument("--stride-arcmin", type=float, default=2.0,
                   help="with --dense --windowed: window stride (default 2')")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "checked"], default="auto",
                   help="auto (default): bf16 with an fp32 re-score of every cutout whose probability it could move "
                        "by > 0.01, where bf16 is native (AVX-512 BF16, AMX, CUDA sm_80+); else fp32. bf16: fastest "
                        "where native, unchecked; bf16 and checked are slower than fp32 where bf16 is emulated")
    s.add_argument("--overwrite", action="store_true", help="replace the workspace's earlier CNN scores")
    add_executor_flags(s)
    s.set_defaults(func=cmd_predict)


def add_mass(sub) -> None:
    s = sub.add_parser("mass", help="CNN log10 M500 of the cutouts the CNN calls positive (a ridge head on the "
                                    "frozen network, trained on this sky's halo masses)")
    s.add_argument("workspace")
    s.add_argument("--model", metavar="PATH", help="model file (default: the workspace's own, else the shipped one)")
    s.add_argument("--level", default="all")
    s.add_argument("--threshold", type=float, default=0.5, help="cnn_prob at or above which a cutout gets a mass")
    s.add_argument("--overwrite", action="store_true", help="replace the workspace's earlier CNN masses")
    s.set_defaults(func=cmd_mass)


def cmd_mass(args) -> int:
    from szviewer.jobs.mass import format_mass, mass_job
    from szviewer.workspace import Workspace

    with progress_bar("mass") as bar:
        s = mass_job(Workspace(args.workspace), model_path=args.model, level=args.level, threshold=args.threshold,
                     overwrite=args.overwrite, progress=bar)
    say(format_mass(s))
    return 0
