"""Screenshot of a spectrum image opened in napari (energy slider in keV) with a spectrum in
the Plots dock: docs/images/gui_spectrum_image.png.

A synthetic 96x128 map (Si matrix, two Fe discs; the bundled NIST standards' shapes, Poisson
counts) is written to a temporary .npz and opened with the plugin's reader, as a user opens
a .bcf; the bundled Fe standard is opened as a spectrum.

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot_spectrum_image.py [OUT.png]
"""

import sys
import tempfile
from pathlib import Path

import numpy as np


def main(out="docs/images/gui_spectrum_image.png"):
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_slads_eds.eds_io import to_axis
    from napari_slads_eds.spectra import EnergyAxis, bundled_standards, read_spectrum

    axis = EnergyAxis(0.0, 0.03, 512)
    H, W = 96, 128
    yy, xx = np.mgrid[:H, :W]
    fe = ((yy - 35) ** 2 + (xx - 40) ** 2 < 20 ** 2) | ((yy - 68) ** 2 + (xx - 95) ** 2 < 16 ** 2)
    shapes = []
    for name in ("Si", "Fe"):
        s = read_spectrum(bundled_standards()[name])
        c = to_axis(s.counts, s.axis, axis, beam_energy_keV=15.0)
        shapes.append(c / c.sum())
    mu = np.where(fe[..., None], shapes[1], shapes[0]) * 400.0
    counts = np.random.default_rng(0).poisson(mu).astype(np.uint16)
    tmp = Path(tempfile.mkdtemp())
    path = tmp / "steel_glass_map.npz"
    np.savez(path, counts=counts, energy_offset_keV=axis.offset_keV, energy_scale_keV=axis.scale_keV,
             beam_energy_keV=15.0, pixel_size_um=0.5, image_BSE=np.where(fe, 200.0, 80.0))

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    app = QApplication.instance()
    viewer.window.add_plugin_dock_widget("napari-slads-eds")
    from napari_slads_eds._widgets._session import session_for

    session_for(viewer).show_plot("spectrum")
    viewer.open(str(path), plugin="napari-slads-eds")
    viewer.open(str(bundled_standards()["Fe"]), plugin="napari-slads-eds")
    cube = next(l for l in viewer.layers if l.name.endswith("(spectrum image)"))
    viewer.layers.selection.active = next(l for l in viewer.layers if l.name.endswith("(spectrum)"))
    viewer.dims.set_point(0, 6.4)                   # Fe K-alpha
    viewer.layers.selection.active = cube
    for _ in range(30):
        app.processEvents()
    viewer.reset_view()
    # napari's "inconsistent units" toast (a spectrum has no pixel units) would cover the map
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for w in viewer.window._qt_window.findChildren(NapariQtNotification):
        w.close()
    for _ in range(10):
        app.processEvents()
    viewer.screenshot(out, canvas_only=False)
    print(f"written: {out}")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
