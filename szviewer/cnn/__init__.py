"""The DeepSZ CNN (paper section 2.2): network, dynamic stratified training, Platt calibration, inference.

Importing this package is cheap: torch is imported only by its submodules
(:mod:`~szviewer.cnn.model`, :mod:`~szviewer.cnn.train`, :mod:`~szviewer.cnn.modelfile`,
:mod:`~szviewer.cnn.predict`, :mod:`~szviewer.cnn.fused`, :mod:`~szviewer.cnn.dense`,
:mod:`~szviewer.cnn.fcn` (the whole-map pass), :mod:`~szviewer.cnn.mass` (log M500 of positive cutouts)), never by
:mod:`~szviewer.cnn.settings` (the network and training settings, the plan of a preset and its time estimate),
which the app's dialogs use. The workspace-level jobs are in :mod:`szviewer.jobs.cnn`.
"""
