"""Where the app's tile jobs run (issue 16 part 5): in the job's own process, on a local Dask cluster of N worker
processes, or on an existing Dask scheduler, as ``--workers`` / ``--scheduler`` give the CLI; and the link to a
running cluster's dashboard, read from the line the job prints when its cluster starts
(:meth:`szviewer.parallel.DaskExecutor.describe`)."""

from __future__ import annotations

import os
import re

from PyQt6 import QtWidgets

#: The dashboard address in a cluster's description line.
DASHBOARD = re.compile(r"dashboard (https?://\S+)")
#: The scheduler address in it.
SCHEDULER = re.compile(r"scheduler (tcp://\S+?)[;,\s]")


class ComputeChooser(QtWidgets.QWidget):
    """'Tiles run on: [this process | local Dask cluster | Dask scheduler] [N workers] [address]'."""

    CHOICES = (("this process", "local"), ("local Dask cluster", "cluster"), ("Dask scheduler", "scheduler"))

    def __init__(self, parent=None):
        super().__init__(parent)
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QtWidgets.QLabel("Tiles run on"))
        self.where = QtWidgets.QComboBox()
        for text, key in self.CHOICES:
            self.where.addItem(text, key)
        self.where.setToolTip("simulate, cutouts (HEALPix sampling) and the matched filter spread their tiles here; "
                              "the products are the same bit for bit")
        self.workers = QtWidgets.QSpinBox(minimum=1, maximum=512, value=max(1, os.cpu_count() or 1),
                                          suffix=" workers")
        self.address = QtWidgets.QLineEdit()
        self.address.setPlaceholderText("tcp://host:8786 or scheduler.json")
        row.addWidget(self.where)
        row.addWidget(self.workers)
        row.addWidget(self.address, 1)
        self.where.currentIndexChanged.connect(self._update)
        self._update()

    def _update(self, *_) -> None:
        key = self.where.currentData()
        self.workers.setVisible(key == "cluster")
        self.address.setVisible(key == "scheduler")

    def options(self) -> dict:
        """The job's keyword arguments: {} (in process), {'workers': N} or {'scheduler': ADDRESS}."""
        key = self.where.currentData()
        if key == "cluster":
            return {"workers": int(self.workers.value())}
        if key == "scheduler" and self.address.text().strip():
            return {"scheduler": self.address.text().strip()}
        return {}


def cluster_line(log: list[str]) -> tuple[str, str] | None:
    """(short rich text, the full line) for a job's Dask cluster, from its log: 'Dask: 2 workers · dashboard'
    (a link) or '· no dashboard'; None when the job ran in its own process."""
    for line in log:
        if line.startswith("Dask "):
            n = re.search(r"(\d+) worker", line)
            dash = DASHBOARD.search(line)
            sched = SCHEDULER.search(line + " ")
            short = "Dask" + (f": {n.group(1)} workers" if n else "")
            if sched and "LocalCluster" not in line:
                short += f" at {sched.group(1)}"
            short += f' · <a href="{dash.group(1)}">dashboard</a>' if dash else " · no dashboard (pip install bokeh)"
            return short, line
    return None
