import numpy as np
import pytest

from szviewer.cutouts.scores import read_scores, score_attrs, write_score_column
from szviewer.errors import InputError


def test_columns_add_and_replace(tmp_path):
    p = tmp_path / "scores.h5"
    ids = np.array([3, 1, 7])
    assert read_scores(p) == {}
    write_score_column(p, ids, "mf_snr", [5.0, np.nan, 2.5], {"floor": "NaN = no detection"})
    write_score_column(p, ids, "cnn_prob", [0.1, 0.9, 0.3])
    cols = read_scores(p, ids)
    assert set(cols) == {"mf_snr", "cnn_prob"}
    assert np.isnan(cols["mf_snr"][1]) and cols["cnn_prob"][1] == 0.9
    write_score_column(p, ids, "cnn_prob", [0.2, 0.8, 0.4])
    assert read_scores(p)["cnn_prob"][0] == 0.2
    assert score_attrs(p)["mf_snr"]["floor"].startswith("NaN")
    with pytest.raises(InputError, match="do not match"):
        read_scores(p, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="2 values for 3"):
        write_score_column(p, ids, "x", [1.0, 2.0])
    # rebuilt cutouts: old columns are dropped, not misaligned
    write_score_column(p, np.array([1, 2]), "mf_snr", [1.0, 2.0])
    assert set(read_scores(p)) == {"mf_snr"}
    assert not [q for q in tmp_path.iterdir() if ".part" in q.name]
