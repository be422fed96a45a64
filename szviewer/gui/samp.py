"""SAMP (astropy.samp): the app talks to TOPCAT, Aladin and DS9 as astronomers' tools talk to each other.

- :meth:`SampLink.send_table`: the candidate table (the export of a method at its thresholds, as a VOTable) to
  every client that loads tables (``table.load.votable``);
- a row highlighted there (``table.highlight.row``) selects that candidate's cutout here;
- :meth:`SampLink.point_at`: DS9 / Aladin go to the selected candidate (``coord.pointAt.sky``);
- :meth:`SampLink.send_cutout`: its cutout as FITS, every band a plane, with a TAN WCS (``image.load.fits``).

No Qt here: messages from the hub arrive on the SAMP client's thread and wait in a queue until the app's
timer calls :meth:`SampLink.poll` on the GUI thread, which applies them to the state.
"""

from __future__ import annotations

import itertools
import queue
import tempfile
import warnings
from pathlib import Path

import numpy as np

TABLE_MTYPE = "table.load.votable"
HIGHLIGHT_MTYPE = "table.highlight.row"
POINT_MTYPE = "coord.pointAt.sky"
IMAGE_MTYPE = "image.load.fits"


def cutout_hdu(images: np.ndarray, ra_deg: float, dec_deg: float, pixel_arcmin: float, bands, name: str = ""):
    """A FITS primary HDU of one cutout: (nband, npix, npix) [uK_CMB] with a TAN WCS centred on (ra, dec) [deg].

    Rows run south -> north and columns east -> west (RA increases to the left), as the cutouts are stored;
    the third axis is the band index (``BAND1`` = 90 ... in the header, GHz)."""
    from astropy.io import fits
    from astropy.wcs import WCS

    img = np.asarray(images, dtype=np.float32)
    nb, ny, nx = img.shape
    w = WCS(naxis=3)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN", "BAND"]
    w.wcs.crval = [float(ra_deg), float(dec_deg), 1.0]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0, 1.0]
    w.wcs.cdelt = [-pixel_arcmin / 60.0, pixel_arcmin / 60.0, 1.0]
    w.wcs.cunit = ["deg", "deg", ""]
    hdr = w.to_header()
    hdr["BUNIT"] = "uK_CMB"
    for k, b in enumerate(bands, start=1):
        hdr[f"BAND{k}"] = (float(b), f"plane {k}: band centre [GHz]")
    if name:
        hdr["OBJECT"] = name
    return fits.PrimaryHDU(img, header=hdr)


class SampLink:
    """A SAMP client of the app, bound to a :class:`~szviewer.gui.state.ViewerState`."""

    _ids = itertools.count(1)

    def __init__(self, state, name: str = "szviewer", folder: str | Path | None = None):
        self.state = state
        self.name = name
        self.client = None
        self._inbox: queue.Queue = queue.Queue()
        self.tables: dict[str, np.ndarray] = {}  # table-id -> the cutout row of each of its rows
        self.urls: dict[str, str] = {}  # url -> table-id
        self._tmp = None
        self.folder = Path(folder) if folder is not None else None
        self.received: list[dict] = []  # the highlights applied (for the status bar and tests)

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    def connect(self, hub=None, hub_params: dict | None = None) -> None:
        """Register with a running hub (the one the lock file names, or ``hub`` / ``hub_params``); raises
        :class:`astropy.samp.SAMPHubError` (no hub running) or ``SAMPClientError``."""
        from astropy.utils.exceptions import AstropyDeprecationWarning

        with warnings.catch_warnings():  # astropy 8 deprecates astropy.samp for pyvo.samp (same protocol)
            warnings.simplefilter("ignore", AstropyDeprecationWarning)
            from astropy.samp import SAMPIntegratedClient

        if self.connected:
            return
        c = SAMPIntegratedClient(name=self.name, description="szviewer: SZ cluster candidates and cutouts",
                                 metadata={"samp.name": self.name, "author.name": "szviewer"})
        kw = {"pool_size": 1}
        if hub is not None:
            kw["hub"] = hub
        if hub_params is not None:
            kw["hub_params"] = hub_params
        c.connect(**kw)
        c.bind_receive_notification(HIGHLIGHT_MTYPE, self._on_highlight)
        c.bind_receive_call(HIGHLIGHT_MTYPE, self._on_highlight_call)
        self.client = c

    def disconnect(self) -> None:
        if self.connected:
            self.client.disconnect()
        self.client = None

    def _require(self) -> None:
        if not self.connected:
            raise RuntimeError("not connected to a SAMP hub: start TOPCAT, Aladin or DS9 (or a hub), then connect")

    def _folder(self) -> Path:
        if self.folder is None:
            if self.state.path is not None:
                self.folder = self.state.path / "exports" / "samp"
            else:
                self._tmp = tempfile.TemporaryDirectory(prefix="szviewer-samp-")
                self.folder = Path(self._tmp.name)
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def clients(self) -> dict[str, str]:
        """Client id -> name of the other clients on the hub."""
        self._require()
        out = {}
        for cid in self.client.get_registered_clients():
            meta = self.client.get_metadata(cid)
            out[cid] = meta.get("samp.name", cid)
        return out

    # ------------------------------------------------------------------ outgoing
    def send_table(self, method: str, split: str = "all", recipient: str | None = None) -> tuple[str, Path]:
        """Export the candidates of ``method`` at its thresholds as a VOTable and send it
        (``table.load.votable``); returns ``(table_id, path)``. Rows keep the order of the file."""
        self._require()
        k = next(self._ids)
        table_id = f"szviewer-{method.lower()}-{k}"
        path = self._folder() / f"{table_id}.xml"
        _, _, table = self.state.export_catalog(path, method, split=split, fmt="votable", overwrite=True)
        url = path.resolve().as_uri()
        self.tables[table_id] = self._rows_of(table)
        self.urls[url] = table_id
        msg = {"samp.mtype": TABLE_MTYPE,
               "samp.params": {"url": url, "table-id": table_id, "name": f"szviewer {method} candidates ({split})"}}
        self._send(msg, recipient)
        return table_id, path

    def _rows_of(self, table) -> np.ndarray:
        """The cutout row of each table row: by ``cutout_id``, else the cutout nearest to the object."""
        s = self.state
        if "cutout_id" in table.colnames:
            return np.array([s.row_of_id(int(i)) for i in table["cutout_id"]], dtype=np.int64)
        ra = np.asarray(table["ra"], float)
        dec = np.asarray(table["dec"], float)
        return np.array([s.nearest(a, d) for a, d in zip(ra, dec, strict=True)], dtype=np.int64)

    def point_at(self, row: int | None = None, recipient: str | None = None) -> tuple[float, float]:
        """Point the sky viewers at a cutout (default: the selected one): ``coord.pointAt.sky``."""
        self._require()
        row = self.state.current if row is None else row
        c = self.state.data.columns
        ra, dec = float(c["ra"][row]), float(c["dec"][row])
        self._send({"samp.mtype": POINT_MTYPE, "samp.params": {"ra": f"{ra:.6f}", "dec": f"{dec:.6f}"}}, recipient)
        return ra, dec

    def send_cutout(self, row: int | None = None, recipient: str | None = None) -> Path:
        """Send a cutout (default: the selected one) as FITS at the shown component level: ``image.load.fits``."""
        self._require()
        s = self.state
        row = s.current if row is None else row
        c = s.data.columns
        cid = int(c["id"][row])
        hdu = cutout_hdu(s.images(row), float(c["ra"][row]), float(c["dec"][row]), s.store.pixel_arcmin,
                         s.store.bands, name=f"szviewer cutout {cid}")
        path = self._folder() / f"cutout_{cid}.fits"
        from szviewer.atomic import atomic_path

        with atomic_path(path) as tmp:
            hdu.writeto(tmp)
        self._send({"samp.mtype": IMAGE_MTYPE, "samp.params": {"url": path.resolve().as_uri(),
                                                                "image-id": f"szviewer-cutout-{cid}",
                                                                "name": f"szviewer cutout {cid}"}}, recipient)
        return path

    def _send(self, msg: dict, recipient: str | None) -> None:
        if recipient is None:
            self.client.notify_all(msg)
        else:
            self.client.notify(recipient, msg)

    # ------------------------------------------------------------------ incoming (SAMP thread -> queue -> GUI)
    def _on_highlight(self, private_key, sender_id, mtype, params, extra):
        self._inbox.put(dict(params))

    def _on_highlight_call(self, private_key, sender_id, msg_id, mtype, params, extra):
        self._inbox.put(dict(params))
        self.client.reply(msg_id, {"samp.status": "samp.ok", "samp.result": {}})

    def poll(self) -> int | None:
        """Apply the highlights that arrived (on the GUI thread): the last one's cutout is selected; returns its
        row, or None when nothing arrived or the row is not one of this app's tables."""
        row = None
        while True:
            try:
                p = self._inbox.get_nowait()
            except queue.Empty:
                break
            tid = p.get("table-id") if p.get("table-id") in self.tables else self.urls.get(p.get("url", ""))
            rows = self.tables.get(tid)
            try:
                k = int(p.get("row"))
            except (TypeError, ValueError):
                continue
            if rows is None or not 0 <= k < rows.size or self.state.data is None or rows[k] >= self.state.n:
                continue
            row = int(rows[k])
            self.received.append({"table-id": tid, "row": k, "cutout_id": int(self.state.data.columns["id"][row])})
        if row is not None:
            self.state.select(row)
        return row
