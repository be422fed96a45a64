"""Take the README screenshot: the app in a real window on a workspace, a found cluster in the inspector.

Usage (Linux, a virtual display): ``Xvfb :96 -screen 0 1920x1080x24 & DISPLAY=:96 python scripts/screenshot.py WS
docs/screenshot.png``. Selects the test-split cluster with the highest CNN probability that both finders found.
"""

from __future__ import annotations

import sys

import numpy as np


def main(workspace: str, out: str) -> int:
    from PyQt6 import QtCore, QtWidgets

    from szviewer.gui.mainwindow import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    win = MainWindow(restore=False)
    win.resize(1900, 1040)
    win.show()
    win.open_workspace(workspace)
    st = win.state
    cols = st.data.columns
    y = np.asarray(cols["label"], bool)
    cnn = np.nan_to_num(np.asarray(st.data.scores.get("cnn_prob", np.zeros(y.size))), nan=0)
    mf = np.nan_to_num(np.asarray(st.data.scores.get("mf_snr", np.zeros(y.size))), nan=0)
    split = np.asarray(cols["split"]).astype(str)
    cand = np.nonzero(y & (split == "test") & (mf > 5))[0]
    row = int(cand[np.argmax(cnn[cand])]) if cand.size else 0
    st.set_filter(split="test")
    st.select(row)

    def grab():
        win.grab().save(out)
        app.quit()

    QtCore.QTimer.singleShot(2500, grab)
    app.exec()
    print(f"wrote {out} (cutout row {row})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
