"""Benchmark of the DeepSZ CNN (issues 6 and 13.1; paper section 2.2): inference and training speed on this CPU.

Rows, all measured in the same process on the paper-sized network (ResNet-50 stages 1-3, 9.7 M parameters):

- the machine: CPU, cores, the flags that decide the precision (AVX2, AVX-512, AVX-512 BF16, AMX);
- inference, plain eager fp32 PyTorch (the reference), cutouts/s;
- inference through :class:`szviewer.cnn.predict.Scorer`: the fused oneDNN fp32 plan of :mod:`szviewer.cnn.fused`
  one batch at a time on all intra-op threads ("1 stream") and as the default runs it (one single-threaded
  stream per thread); where bf16 is native (AVX-512 BF16 / AMX) also 'bf16' (unchecked) and 'checked' (bf16
  with an fp32 re-score of every cutout whose calibrated probability bf16 could move by more than 0.01: what
  'auto' picks there). Each with the largest difference of its Platt-calibrated probabilities from eager fp32 on
  the same cutouts (must be <= 0.01); targets >= 2x eager in fp32 everywhere, >= 1,000 cutouts/s on 2 AVX2 cores
  and >= 2,500/s on 2 AVX-512 cores (issue 13);
- with ``--alternatives``: the other runtimes the issue names, on the same folded network and cutouts:
  torch.compile (inductor with freezing), ONNX Runtime and OpenVINO (f32; 1 stream and one per thread) where
  they are installed (they are not dependencies of szviewer: ``pip install onnxruntime openvino onnx``);
- dense scoring of the same sky's map (issue 13 part 2), seconds per deg^2: the 2' windows one by one on
  512 x 512 pixels (the reference) and the fully convolutional pass on ``--fcn-crop`` pixels (1' grid in fp32
  before / fused, and where bf16 is native bf16 and checked; 2' and 4' grids in 'auto'), with their
  multiply-accumulates per deg^2 and their probability differences from fp32 and from the windows
  (:func:`dense_rows`; ``--no-dense`` skips them, ``--dense-only`` runs only them);
- training, batches/s at batch 128: eager fp32, and the presets' fast path as :func:`szviewer.cnn.train.train`
  runs it here (channels-last, plus bf16 autocast only where bf16 is native);
- peak resident memory of the process.

The network is the shipped model (realistic BatchNorm statistics and calibration) when it exists, otherwise a
freshly initialised one with Platt (1, 0). Cutouts are read from ``--workspace WS``, otherwise from a 60 deg^2
synthetic sky (seed 2, the default generator) simulated into a temporary folder first (~15 s). All rows are
timed in alternating rounds (best of 3) so a busy neighbour hurts them alike; ratios are to eager in the same run.

Run: ``python benchmarks/bench_cnn.py [--n 4096] [--workspace WS] [--threads 2] [--alternatives]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import best_time


def _cutouts(n: int, workspace: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cutouts and tile 0's observed map (uK) of the same sky."""
    from szviewer.workspace import Workspace

    def read(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
        with ws.cutout_store() as store:
            x = store.images(np.arange(min(n, len(store))))
        return x, np.ascontiguousarray(ws.sky().tile_maps(0))

    if workspace:
        return read(Workspace(workspace))
    from szviewer.cutouts.build import CutoutSettings
    from szviewer.jobs.cutouts import make_cutouts
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.sky.synthetic import SimulationSettings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sky"
        simulate_workspace(path, SimulationSettings(area_deg2=60.0, seed=2))
        make_cutouts(Workspace(path), CutoutSettings())
        return read(Workspace(path))


def _crop(m: np.ndarray, crop: int) -> np.ndarray:
    y0, x0 = max(0, (m.shape[1] - crop) // 2), max(0, (m.shape[2] - crop) // 2)
    return np.ascontiguousarray(m[:, y0:y0 + crop, x0:x0 + crop])


def dense_rows(model, tile_map: np.ndarray, pixel_arcmin: float = 0.25, fcn_crop: int = 1024,
               rounds: int = 2) -> list[dict]:
    """Dense scoring (issue 13 part 2): 2' windows one by one (the reference, on the central 512 x 512 pixels of
    ``tile_map``) against the fully convolutional pass (:class:`szviewer.cnn.fcn.FCNPlan`) on the central
    ``fcn_crop`` pixels (a job's tile is 30 deg^2 with its margins: a map of that order amortises the bf16
    check's fixed cost), in seconds per deg^2 of map.

    1' grid: fp32 with plain ``F.conv2d`` (``fused=False``: the eager ops the plan had before), fp32 with the
    oneDNN fused ops (the exact reference path), and where bf16 is native bf16 unchecked (the whole trunk, and the
    default recipe with the last stage and head in bf16) and 'checked' (what 'auto' picks there); 2' and 4' grids
    in 'auto'. The 1' rows are timed in alternating rounds (best of ``rounds``), the rest once. Notes: MACs per
    deg^2, the largest |p - p_fp32| on the same map (must be <= 0.01), and for the rows that share the 2' origins
    with the windows the median and largest |p_fcn - p_windowed| there (context against zero padding: not 0,
    see ``szviewer/cnn/fcn.py``).
    """
    from szviewer.cnn.dense import dense_raw_map
    from szviewer.cnn.fcn import FCNPlan, window_macs
    from szviewer.cnn.fused import bf16_native
    from szviewer.cnn.predict import Scorer

    if model.config.scaling != "fixed":
        return [{"name": "dense CNN: fully convolutional rows not run ('minmax' model)", "seconds": None,
                 "throughput": None, "unit": "", "target": None, "ratio_to_ref": None}]
    win_map, fcn_map = _crop(tile_map, 512), _crop(tile_map, fcn_crop)

    def area(m):
        return m.shape[1] * m.shape[2] * (pixel_arcmin / 60.0) ** 2

    scorer = Scorer(model.net, precision="fp32", platt=model.platt)
    t0 = time.perf_counter()
    win = dense_raw_map(win_map, scorer, stride_pix=8)
    t_win = (time.perf_counter() - t0) / area(win_map)
    px_per_deg2 = (60.0 / pixel_arcmin) ** 2
    mac_win = window_macs(model.net) / 64.0 * px_per_deg2
    rows = [{"name": f"dense CNN, windowed 2' (reference, fused fp32), {win_map.shape[2]}^2 px map",
             "seconds": t_win, "throughput": 3600.0 / t_win, "unit": "deg^2/h", "target": None, "ratio_to_ref": 1.0,
             "note": f"s per deg^2; {mac_win / 1e9:.0f} GMAC/deg^2; {win.size} windows"}]
    native = bf16_native()
    plans = {"fp32, plain F.conv2d (before)": FCNPlan(model.net, 4, precision="fp32", fused=False),
             "fp32, fused oneDNN (exact reference)": FCNPlan(model.net, 4, precision="fp32")}
    if native:
        plans["bf16 whole trunk, unchecked"] = FCNPlan(model.net, 4, precision="bf16", bf16_stage=0)
        plans["bf16 last stage + head, unchecked"] = FCNPlan(model.net, 4, precision="bf16")
    plans["auto (" + ("checked bf16" if native else "fp32") + ")"] = FCNPlan(model.net, 4, platt=model.platt)
    times, raws = dict.fromkeys(plans, np.inf), {}
    for _ in range(rounds):
        for name, plan in plans.items():
            t0 = time.perf_counter()
            raws[name] = plan.raw_map(fcn_map)
            times[name] = min(times[name], time.perf_counter() - t0)
    ref_name = "fp32, fused oneDNN (exact reference)"
    p32 = model.calibrate(raws[ref_name])

    def vs_windowed(raw, step):
        shared = raw[:: 8 // step, :: 8 // step]
        # the windows' map is the centre of the fcn map: origins offset by (fcn_crop - 512) / 2 pixels
        off = (fcn_map.shape[1] - win_map.shape[1]) // 2
        if off % 8:
            return ""
        k = off // 8
        sub = shared[k:k + win.shape[0], k:k + win.shape[1]]
        n = min(sub.shape[0], win.shape[0]), min(sub.shape[1], win.shape[1])
        dp = np.abs(model.calibrate(sub[:n[0], :n[1]]) - model.calibrate(win[:n[0], :n[1]]))
        return f"; |p - p_windowed| median {np.median(dp):.1g}, max {dp.max():.2f}"

    mac = plans[ref_name].macs_per_pixel() * px_per_deg2
    for name, plan in plans.items():
        t = times[name] / area(fcn_map)
        dp = float(np.max(np.abs(model.calibrate(raws[name]) - p32)))
        note = (f"s per deg^2 ({fcn_map.shape[2]}^2 px); {mac / 1e9:.0f} GMAC/deg^2 ({mac_win / mac:.1f}x fewer); "
                f"{times[ref_name] / times[name]:.2f}x fp32 fused; max |p - p_fp32| {dp:.2g}")
        if plan.precision == "checked":
            st = plan.stats
            note += f" ({st['sentinels']} sentinels, {st['fallbacks']} fp32 fallbacks)"
        if name == ref_name:
            note += vs_windowed(raws[name], 4)
        rows.append({"name": f"dense CNN, fully convolutional 1' grid, {name}", "seconds": t,
                     "throughput": 3600.0 / t, "unit": "deg^2/h", "target": "<=0.175" if "auto" in name else None,
                     "ratio_to_ref": t_win / t, "max_calibrated_diff": dp, "note": note})
    octant = 5157.0 * rows[-1]["seconds"] / 60.0
    rows[-1]["note"] += f"; octant (5,157 deg^2) at this rate: {octant:.0f} min (target 15)"
    for step in (8, 16):
        plan = FCNPlan(model.net, step, platt=model.platt)
        t0 = time.perf_counter()
        raw = plan.raw_map(fcn_map)
        t = (time.perf_counter() - t0) / area(fcn_map)
        mac = plan.macs_per_pixel() * px_per_deg2
        note = f"s per deg^2; {mac / 1e9:.0f} GMAC/deg^2 ({mac_win / mac:.1f}x fewer)"
        if step == 8:
            note += vs_windowed(raw, step)
        rows.append({"name": f"dense CNN, fully convolutional {step * pixel_arcmin:g}' grid ({plan.precision})",
                     "seconds": t, "throughput": 3600.0 / t, "unit": "deg^2/h", "target": ">=10x",
                     "ratio_to_ref": t_win / t, "note": note})
    rows += distilled_rows(model, fcn_map, raws[ref_name], t_win, mac_win, area(fcn_map))
    return rows


def distilled_rows(model, fcn_map: np.ndarray, exact_raw: np.ndarray, t_win: float, mac_win: float,
                   area_deg2: float) -> list[dict]:
    """The 4' pass plus the model's distilled fine head (:mod:`szviewer.cnn.finehead`) on the same map as the 1'
    rows: seconds per deg^2, its ratio to the 2' windows, and how far its probabilities are from the exact 1' map
    (median, 99th percentile, largest). No row when the model has no fine head beside it."""
    from szviewer.cnn.finehead import FineHeadPlan, head_path, load_head

    hp = head_path(model.path) if model.path is not None else None
    if hp is None or not hp.is_file():
        return []
    plan = FineHeadPlan(model.net, load_head(hp, model)[0])
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        raw = plan.raw_map(fcn_map)
        best = min(best, time.perf_counter() - t0)
    t = best / area_deg2
    dp = np.abs(model.calibrate(raw) - model.calibrate(exact_raw))
    mac = plan.macs_per_pixel() * (60.0 / 0.25) ** 2
    note = (f"s per deg^2; {mac / 1e9:.1f} GMAC/deg^2 ({mac_win / mac:.1f}x fewer); |p - p_exact 1'| median "
            f"{np.median(dp):.1g}, p99 {np.percentile(dp, 99):.2f}, max {dp.max():.2f}; octant at this rate: "
            f"{5157.0 * t / 60.0:.0f} min (target 15)")
    return [{"name": "dense CNN, 1' grid, distilled (4' pass + fine head)", "seconds": t, "throughput": 3600.0 / t,
             "unit": "deg^2/h", "target": ">=10x", "ratio_to_ref": t_win / t, "note": note}]


def machine_row() -> dict:
    import torch

    from szviewer.cnn.fused import bf16_native, cpu_features

    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name")), cpu)
    except OSError:
        pass
    flags = [k for k, v in cpu_features().items() if v]
    return {"name": f"machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            "seconds": None, "throughput": None, "unit": "", "target": None, "ratio_to_ref": None,
            "note": f"flags {' '.join(flags) or 'none'}; bf16 native: {bf16_native()}; torch {torch.__version__}"}


def _alternatives(model, x: np.ndarray, batch: int = 128) -> dict:
    """name -> scoring function (raw scores of all of ``x``) for the runtimes that are installed here."""
    import torch

    from szviewer.cnn.fused import batched
    from szviewer.cnn.model import raw_score
    from szviewer.cnn.predict import fuse_for_inference

    cfg = model.config
    inv = (1.0 / np.asarray(cfg.scale_uk, dtype=np.float32)).reshape(1, -1, 1, 1)

    def scale(xb: np.ndarray) -> np.ndarray:
        if cfg.scaling == "minmax":
            flat = xb.reshape(len(xb), -1)
            lo, hi = flat.min(1).reshape(-1, 1, 1, 1), flat.max(1).reshape(-1, 1, 1, 1)
            return ((xb - lo) / np.maximum(hi - lo, np.float32(1e-12))).astype(np.float32)
        return np.arcsinh(xb * inv)

    folded = fuse_for_inference(model.net).eval()
    body = torch.nn.Sequential(folded.stem, folded.stages, folded.head).eval()  # input scaling done in numpy
    threads = torch.get_num_threads()
    out: dict = {}
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    t0 = time.perf_counter()
    compiled = torch.compile(copy.deepcopy(body))
    with torch.inference_mode():
        compiled(torch.from_numpy(scale(x[:batch])))

    def compiled_fwd(xb):
        return raw_score(compiled(torch.from_numpy(scale(xb)))).numpy()

    note = f"compile {time.perf_counter() - t0:.0f} s"
    out[f"torch.compile inductor+freezing, 1 stream ({note})"] = lambda: batched(x, batch, compiled_fwd, 1)
    out[f"torch.compile inductor+freezing, {threads} streams"] = lambda: batched(x, batch, compiled_fwd, threads)
    onnx_path = Path(tempfile.mkdtemp()) / "deepsz.onnx"
    try:
        import onnx  # noqa: F401 - the exporter needs it

        torch.onnx.export(body, (torch.from_numpy(scale(x[:4])),), onnx_path, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False,
                          opset_version=17)
    except Exception as exc:  # noqa: BLE001 - no onnx, or an exporter that refuses: no ONNX rows
        print(f"bench_cnn: no ONNX export ({type(exc).__name__}: {exc})", file=sys.stderr)
        return out
    from concurrent.futures import ThreadPoolExecutor

    def streamed(runs: list) -> np.ndarray:
        res = np.empty(len(x), dtype=np.float32)
        starts = list(range(0, len(x), batch))

        def work(i):
            for a in starts[i::len(runs)]:
                res[a:a + batch] = runs[i](x[a:a + batch])

        with ThreadPoolExecutor(len(runs)) as pool:
            list(pool.map(work, range(len(runs))))
        return res

    try:
        import onnxruntime as ort

        def session(n_threads: int):
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n_threads, 1
            s = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

            def run(xb, s=s):
                lg = s.run(None, {"x": scale(xb)})[0]
                return lg[:, 1] - lg[:, 0]
            return run

        one = session(threads)
        per = [session(1) for _ in range(threads)]
        out[f"onnxruntime {ort.__version__}, 1 session x {threads} threads"] = lambda: streamed([one])
        out[f"onnxruntime {ort.__version__}, {threads} sessions x 1 thread"] = lambda: streamed(per)
    except ImportError:
        pass
    try:
        import openvino as ov

        core = ov.Core()
        om = core.read_model(str(onnx_path))
        version = ov.__version__.split("-")[0]
        for hint in ("LATENCY", "THROUGHPUT"):
            cm = core.compile_model(om, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint,
                                                "INFERENCE_NUM_THREADS": threads})
            n_req = max(1, int(cm.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            reqs = [cm.create_infer_request() for _ in range(n_req)]

            def run_with(req):
                def run(xb):
                    lg = req.infer({0: scale(xb)})[0]
                    return lg[:, 1] - lg[:, 0]
                return run

            out[f"openvino {version} f32, {hint.lower()} ({n_req} stream{'s' * (n_req > 1)})"] = (
                lambda reqs=reqs: streamed([run_with(r) for r in reqs]))
    except ImportError:
        pass
    return out


def run(n: int = 4096, workspace: str | None = None, train_batches: int = 4, alternatives: bool = False,
        dense: bool = True, dense_only: bool = False, fcn_crop: int = 1024) -> list[dict]:
    import torch

    from szviewer.cnn.fused import bf16_native
    from szviewer.cnn.model import DeepSZNet, NetConfig, raw_score
    from szviewer.cnn.modelfile import CNNModel, Platt, load_model
    from szviewer.cnn.predict import Scorer
    from szviewer.cnn.train import bf16_autocast_pays
    from szviewer.jobs.cnn import default_model_path

    rows: list[dict] = [machine_row()]
    path = default_model_path()
    if path.is_file():
        model = load_model(path)
        label = "shipped model"
    else:
        torch.manual_seed(0)
        model = CNNModel(DeepSZNet(NetConfig()), Platt(1.0, 0.0))
        label = "random init"
    x, tile_map = _cutouts(n, workspace)
    n = len(x)
    if dense_only:
        return rows + dense_rows(model, tile_map, fcn_crop=fcn_crop)

    # reference: plain eager fp32, contiguous tensors, torch.no_grad, batches of 256
    ref_net = copy.deepcopy(model.net).eval()

    def eager():
        out = []
        with torch.no_grad():
            for a in range(0, n, 256):
                out.append(raw_score(ref_net(torch.from_numpy(x[a:a + 256]))).numpy())
        return np.concatenate(out)

    threads = torch.get_num_threads()
    candidates = {f"fused fp32 plan, 1 stream x {threads} threads": Scorer(model.net, precision="fp32", streams=1,
                                                                           platt=model.platt),
                  f"fused fp32 plan, {threads} streams x 1 thread (default fp32)": Scorer(model.net, precision="fp32",
                                                                                          platt=model.platt)}
    native = bf16_native()
    if native:
        candidates["fused bf16, unchecked"] = Scorer(model.net, precision="bf16", platt=model.platt)
        candidates["checked: bf16 + fp32 re-score (auto here)"] = Scorer(model.net, precision="checked",
                                                                         platt=model.platt)
    fns = {name: (lambda s=s: s.raw(x)) for name, s in candidates.items()}
    engines = {name: s.engine for name, s in candidates.items()}
    if alternatives:
        for name, fn in _alternatives(model, x).items():
            fns[name], engines[name] = fn, "alt"
    raw_ref = eager()
    p_ref = model.calibrate(raw_ref)
    raws = {name: fn() for name, fn in fns.items()}
    t_ref, times = np.inf, dict.fromkeys(fns, np.inf)
    for _ in range(3):  # alternating rounds: a busy neighbour hurts every row alike
        t_ref = min(t_ref, best_time(eager, 1))
        for name, fn in fns.items():
            times[name] = min(times[name], best_time(fn, 1))
    rows.append({"name": f"CNN inference, eager fp32 (reference, {label})", "seconds": t_ref,
                 "throughput": n / t_ref, "unit": "cutouts/s", "target": None, "ratio_to_ref": 1.0})
    for name in fns:
        diff = float(np.max(np.abs(model.calibrate(raws[name]) - p_ref)))
        note = f"max |p - p_fp32| = {diff:.2g} ({'<=' if diff <= 0.01 else 'NOT <='} 0.01)"
        if name.startswith("checked"):
            st = candidates[name].stats
            note += f", {100 * st['refined'] / max(st['cutouts'], 1):.1f}% re-scored in fp32"
        target = ">=2x" if "fp32" in name else (">=2500" if native else None)
        rows.append({"name": f"CNN inference, {name}" + (f" [{engines[name]}]" if engines[name] != "alt" else ""),
                     "seconds": times[name], "throughput": n / times[name], "unit": "cutouts/s", "target": target,
                     "ratio_to_ref": t_ref / times[name], "max_calibrated_diff": diff, "note": note})
    if not native:
        rows.append({"name": "CNN inference, bf16 / checked: not run (bf16 is emulated on this CPU)",
                     "seconds": None, "throughput": None, "unit": "", "target": None, "ratio_to_ref": None,
                     "note": "'auto' is fp32 here; emulated bf16 is several times slower than fp32"})

    if dense:
        rows += dense_rows(model, tile_map, fcn_crop=fcn_crop)

    # training: batches of 128 per second, eager fp32 vs the presets' fast path as train() runs it here
    def train_rate(fast_path: bool) -> float:
        torch.manual_seed(0)
        net = DeepSZNet(model.config)
        if fast_path:
            net = net.to(memory_format=torch.channels_last)
        amp = fast_path and bf16_autocast_pays("cpu")
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=3e-3)
        xb = torch.from_numpy(x[:128] if len(x) >= 128 else np.resize(x, (128,) + x.shape[1:]))
        yb = torch.randint(0, 2, (128,))

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(net(xb).float(), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        times = []
        for _ in range(train_batches):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    t32 = train_rate(False)
    rows.append({"name": "CNN training, eager fp32, batch 128 (reference)", "seconds": t32, "throughput": 1 / t32,
                 "unit": "batches/s", "target": None, "ratio_to_ref": 1.0})
    tfast = train_rate(True)
    how = "bf16 autocast + channels-last" if bf16_autocast_pays("cpu") else "fp32 channels-last (no native bf16)"
    rows.append({"name": f"CNN training, presets' fast path here: {how}, batch 128", "seconds": tfast,
                 "throughput": 1 / tfast, "unit": "batches/s", "target": None, "ratio_to_ref": t32 / tfast})
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
    head = f"{'benchmark':<72}{'seconds':>10}{'throughput':>12}  {'unit':<11}{'target':>8}{'x ref':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
        thr = "-" if r["throughput"] is None else f"{r['throughput']:.4g}"
        ratio = "" if r["ratio_to_ref"] is None else f"{r['ratio_to_ref']:.2f}"
        lines.append(f"{r['name'][:71]:<72}{sec:>10}{thr:>12}  {r['unit']:<11}{r['target'] or '':>8}"
                     f"{ratio:>8}  {r.get('note', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="DeepSZ CNN benchmark")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--workspace")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--alternatives", action="store_true",
                    help="also time torch.compile, ONNX Runtime and OpenVINO (where installed)")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense (windowed vs fully convolutional) rows")
    ap.add_argument("--dense-only", action="store_true", help="only the machine and the dense rows")
    ap.add_argument("--fcn-crop", type=int, default=1024, help="side in pixels of the map the FCN rows score")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    print(format_rows(run(a.n, a.workspace, alternatives=a.alternatives, dense=not a.no_dense,
                          dense_only=a.dense_only, fcn_crop=a.fcn_crop)))
    sys.exit(0)
