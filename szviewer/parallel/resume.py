"""Per-tile checkpoints, so that a re-run after a cancel, a kill or a lost cluster skips the tiles already done.

How a partial run is resumed (issue 16 part 2): a tile task writes its result, complete, under its final name
``tile_NNNN.<ext>`` (atomically: :mod:`szviewer.atomic`; the file *is* the tile's done marker) in a checkpoint
folder of the product, ``WS/<product>/.tiles-<key>/``. ``key`` is a hash of everything the tile results depend on
(the job, szviewer's version, the settings, the input generations), so a run with other settings or over a rebuilt
sky never picks up stale tiles; it starts a folder of its own. The product's generation folder itself stays the
workspace's (:meth:`szviewer.workspace.Workspace.writing`: built under a temporary name, discarded on a cancel):
the checkpoints are the only thing a cancel keeps. The driver reads the tiles back in tile order, combines them
exactly as one in-process loop would, commits the product (the manifest is the driver's alone), and then removes
every checkpoint folder of that product. A half-written tile is a temporary ``.tile_NNNN...part`` file carrying
its writer's pid, removed as a leftover once that process is gone (:mod:`szviewer.workspace.locks`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

#: Checkpoint folders of a product: ``WS/<product>/.tiles-<key>``.
PREFIX = ".tiles-"


def checkpoint_key(what: dict) -> str:
    """A short stable hash of what the tile results depend on (JSON, sorted keys)."""
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class TileCheckpoints:
    """The checkpoint folder of one product for one set of inputs (see the module docstring)."""

    def __init__(self, product_folder: str | Path, what: dict, ext: str = ".h5"):
        self.parent = Path(product_folder)
        self.folder = self.parent / f"{PREFIX}{checkpoint_key(what)}"
        self.ext = ext

    def path(self, index: int) -> Path:
        return self.folder / f"tile_{int(index):04d}{self.ext}"

    def done(self) -> set[int]:
        """Indices of the tiles whose result is complete."""
        if not self.folder.is_dir():
            return set()
        out = set()
        for p in self.folder.glob(f"tile_[0-9][0-9][0-9][0-9]{self.ext}"):
            out.add(int(p.stem.split("_")[1]))
        return out

    def make(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def clear_all(self) -> None:
        """Remove every checkpoint folder of the product (after its commit)."""
        if self.parent.is_dir():
            for p in self.parent.glob(f"{PREFIX}*"):
                shutil.rmtree(p, ignore_errors=True)
