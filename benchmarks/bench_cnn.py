"""Benchmark of the DeepSZ CNN (issue 6; paper section 2.2): inference and training speed on this machine.

Rows, all measured in the same process on the paper-sized network (ResNet-50 stages 1-3, 9.7 M parameters):

- inference, plain eager fp32 PyTorch (the reference), cutouts/s;
- inference at each precision of :class:`szviewer.cnn.predict.Scorer` (fused oneDNN plan of
  :mod:`szviewer.cnn.fused`): 'fp32', 'bf16' (unchecked) and 'checked' (bf16, with an fp32 re-score of every
  cutout whose calibrated probability the bf16 error could move by more than 0.01; what 'auto' picks on a CPU with
  native bf16), each with the largest difference of its Platt-calibrated probabilities from the eager fp32 ones
  on the same cutouts (must be <= 0.01) and, for 'checked', the fraction re-scored; target >= 2,500 cutouts/s on
  2 CPU cores;
- training, batches of 128 per second, eager fp32 vs bf16 autocast + channels-last;
- peak resident memory of the process.

The network is the shipped model (realistic BatchNorm statistics and calibration) when it exists, otherwise a
freshly initialised one with Platt (1, 0). Cutouts are read from ``--workspace WS``, otherwise from a 60 deg^2
synthetic sky (seed 2, the default generator) simulated into a temporary folder first (~15 s).

Run: ``python benchmarks/bench_cnn.py [--n 4096] [--workspace WS] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import copy
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import best_time


def _cutouts(n: int, workspace: str | None) -> np.ndarray:
    from szviewer.workspace import Workspace

    if workspace:
        with Workspace(workspace).cutout_store() as store:
            return store.images(np.arange(min(n, len(store))))
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sky"
        simulate_workspace(path, SimulationSettings(area_deg2=60.0, seed=2))
        make_cutouts(Workspace(path), CutoutSettings())
        with Workspace(path).cutout_store() as store:
            return store.images(np.arange(min(n, len(store))))


def run(n: int = 4096, workspace: str | None = None, train_batches: int = 4) -> list[dict]:
    import torch

    from szviewer.cnn.model import DeepSZNet, NetConfig, raw_score
    from szviewer.cnn.modelfile import CNNModel, Platt, load_model
    from szviewer.cnn.predict import Scorer
    from szviewer.jobs.cnn import default_model_path

    rows: list[dict] = []
    path = default_model_path()
    if path.is_file():
        model = load_model(path)
        label = "shipped model"
    else:
        torch.manual_seed(0)
        model = CNNModel(DeepSZNet(NetConfig()), Platt(1.0, 0.0))
        label = "random init"
    x = _cutouts(n, workspace)
    n = len(x)

    # reference: plain eager fp32, contiguous tensors, torch.no_grad, batches of 256; each precision on the same
    # cutouts. All are timed in alternating rounds (best of 3) so a busy neighbour hurts them alike.
    ref_net = copy.deepcopy(model.net).eval()

    def eager():
        out = []
        with torch.no_grad():
            for a in range(0, n, 256):
                out.append(raw_score(ref_net(torch.from_numpy(x[a:a + 256]))).numpy())
        return np.concatenate(out)

    scorers = {p: Scorer(model.net, precision=p, platt=model.platt) for p in ("fp32", "bf16", "checked")}
    raw_ref = eager()
    p_ref = model.calibrate(raw_ref)
    raws = {p: s.raw(x) for p, s in scorers.items()}
    refined = scorers["checked"].stats["refined"] / scorers["checked"].stats["cutouts"]
    t_ref, times = np.inf, dict.fromkeys(scorers, np.inf)
    for _ in range(3):
        t_ref = min(t_ref, best_time(eager, 1))
        for p, s in scorers.items():
            times[p] = min(times[p], best_time(lambda s=s: s.raw(x), 1))
    rows.append({"name": f"CNN inference, eager fp32 (reference, {label})", "seconds": t_ref,
                 "throughput": n / t_ref, "unit": "cutouts/s", "target": None, "ratio_to_ref": 1.0})
    names = {"fp32": "fused oneDNN fp32", "bf16": "fused bf16, unchecked",
             "checked": "checked: bf16 + fp32 re-score (auto)"}
    for p, s in scorers.items():
        diff = float(np.max(np.abs(model.calibrate(raws[p]) - p_ref)))
        note = f"max |p - p_fp32| = {diff:.2g} (<= 0.01)"
        if p == "checked":
            note += f", {100 * refined:.1f}% re-scored in fp32"
        rows.append({"name": f"CNN inference, {names[p]} [{s.engine}]", "seconds": times[p],
                     "throughput": n / times[p], "unit": "cutouts/s", "target": ">=2500",
                     "ratio_to_ref": t_ref / times[p], "max_calibrated_diff": diff, "note": note})

    # training: batches of 128 per second, fp32 vs bf16 autocast + channels-last
    def train_rate(fast_path: bool) -> float:
        torch.manual_seed(0)
        net = DeepSZNet(model.config)
        if fast_path:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=3e-3)
        xb = torch.from_numpy(x[:128] if len(x) >= 128 else np.resize(x, (128,) + x.shape[1:]))
        yb = torch.randint(0, 2, (128,))

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_path):
                loss = torch.nn.functional.cross_entropy(net(xb).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        t0 = time.perf_counter()
        for _ in range(train_batches):
            step()
        return (time.perf_counter() - t0) / train_batches

    t32 = train_rate(False)
    rows.append({"name": "CNN training, eager fp32, batch 128 (reference)", "seconds": t32, "throughput": 1 / t32,
                 "unit": "batches/s", "target": None, "ratio_to_ref": 1.0})
    tbf = train_rate(True)
    rows.append({"name": "CNN training, bf16 autocast + channels-last, batch 128", "seconds": tbf,
                 "throughput": 1 / tbf, "unit": "batches/s", "target": None, "ratio_to_ref": t32 / tbf})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows.append({"name": "peak resident memory (this benchmark)", "seconds": None, "throughput": peak, "unit": "GB",
                 "target": None, "ratio_to_ref": None})
    if torch.cuda.is_available():  # a lent GPU: the module path on it, checked precision
        gpu = Scorer(model.net, device="cuda", batch=2048, precision="checked", platt=model.platt)
        diff = float(np.max(np.abs(model.calibrate(gpu.raw(x)) - p_ref)))
        torch.cuda.synchronize()
        t_gpu = best_time(lambda: gpu.raw(x), 3)
        rows.append({"name": f"CNN inference, {torch.cuda.get_device_name()} checked", "seconds": t_gpu,
                     "throughput": n / t_gpu, "unit": "cutouts/s", "target": None, "ratio_to_ref": t_ref / t_gpu,
                     "note": f"max |p - p_fp32| = {diff:.2g}"})
    return rows


def format_rows(rows: list[dict]) -> str:
    head = f"{'benchmark':<58}{'seconds':>10}{'throughput':>12}  {'unit':<11}{'target':>8}{'x ref':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
        ratio = "" if r["ratio_to_ref"] is None else f"{r['ratio_to_ref']:.2f}"
        lines.append(f"{r['name'][:57]:<58}{sec:>10}{r['throughput']:>12.4g}  {r['unit']:<11}{r['target'] or '':>8}"
                     f"{ratio:>8}  {r.get('note', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="DeepSZ CNN benchmark")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--workspace")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    print(format_rows(run(a.n, a.workspace)))
    sys.exit(0)
