"""Distil the fine head of a CNN model (:mod:`szviewer.cnn.finehead`) and write it beside the model.

    python scripts/train_fine_head.py [--model models/deepsz_synthetic.pt] [--work /tmp/szviewer-finehead]
                                      [--area 400] [--seed 5] [--blocks 3] [--block-pix 1408] [--epochs 30]

1. simulates a sky of the model's instrument (``--area`` deg^2, ``--seed``: not a sky the model was trained or
   checked on; no labels are used) or reuses the one in ``--work``;
2. takes ``--blocks`` blocks of ``--block-pix`` pixels from each tile (seeded positions on the 16-pixel grid);
3. distils the head (:func:`szviewer.cnn.finehead.distil`): the exact 1' fully convolutional map (fp32) is the
   target, the 4' pass's first-stage features and interpolated map the input;
4. writes ``<model>.finehead.pt`` (fp32 weights, bound to the model's SHA-256) with a card: the sky, blocks,
   settings, the held-out crops' probability errors and the time taken.

About 8 minutes on 2 CPU cores for the defaults (the fp32 teacher maps are most of it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "deepsz_synthetic.pt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/szviewer-finehead"))
    ap.add_argument("--area", type=float, default=400.0)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--blocks", type=int, default=3, help="blocks per tile")
    ap.add_argument("--block-pix", type=int, default=1408)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--crops", type=int, default=24, help="training crops per block")
    a = ap.parse_args(argv)

    import numpy as np

    from szviewer.cnn.finehead import DistilSettings, distil, head_path, save_head
    from szviewer.cnn.modelfile import load_model
    from szviewer.jobs.simulate import simulate_workspace
    from szviewer.progress import TqdmProgress
    from szviewer.sky.synthetic import SimulationSettings
    from szviewer.workspace import Workspace

    model = load_model(a.model)
    instrument = model.card.get("training_sky", {}).get("instrument", "spt3g-paper")
    t0 = time.perf_counter()
    ws_path = a.work / f"sky_{instrument}_{a.area:g}deg2_seed{a.seed}"
    if not (ws_path / "workspace.json").is_file():
        simulate_workspace(ws_path, SimulationSettings(area_deg2=a.area, seed=a.seed, instrument=instrument),
                           overwrite=True)
    sky = Workspace(ws_path).sky()
    rng = np.random.default_rng(a.seed)
    n = a.block_pix
    maps, blocks = [], []
    for k in range(len(sky.tiles)):
        m = sky.tile_maps(k)
        for _ in range(a.blocks):
            y0 = int(rng.integers(0, max(1, (m.shape[1] - n) // 16 + 1))) * 16
            x0 = int(rng.integers(0, max(1, (m.shape[2] - n) // 16 + 1))) * 16
            maps.append(np.ascontiguousarray(m[:, y0:y0 + n, x0:x0 + n]))
            blocks.append([k, y0, x0])
    settings = DistilSettings(epochs=a.epochs, crops=a.crops)
    progress = TqdmProgress("fine head")
    try:
        head, report = distil(model, maps, settings, progress=progress)
    finally:
        progress.close()
    card = {"sky": {"instrument": instrument, "area_deg2": a.area, "seed": a.seed, "workspace": str(ws_path)},
            "blocks": {"pixels": n, "per_tile": a.blocks, "positions": blocks}, "report": report,
            "seconds": round(time.perf_counter() - t0, 1), "model": str(a.model)}
    out = save_head(head_path(a.model), head, model, card)
    print(json.dumps({k: v for k, v in report.items() if k not in ("settings", "config")}, indent=1))
    print(f"wrote {out} in {card['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
