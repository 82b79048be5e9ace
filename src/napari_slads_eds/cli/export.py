"""``slads-eds export``: reload a run and write it as a HyperSpy .hspy/.zspy file or a
plain .npz (:func:`napari_slads_eds.export.export_run`)."""

from __future__ import annotations

import numpy as np

__all__ = ["add_export_parser", "export_command"]


def add_export_parser(sub) -> None:
    """Register ``slads-eds export`` (reload a run and write it as .hspy/.zspy/.npz)."""
    p = sub.add_parser("export", help="reload a run (folder, run.npz, .hspy, .npz) and export it "
                                      "as a HyperSpy .hspy/.zspy file or a plain .npz")
    p.add_argument("run", help="run folder (slads-eds run/replay output), run.npz, or an exported file")
    p.add_argument("--to", required=True, help="output file: .hspy, .zspy or .npz")


def export_command(args) -> int:
    """Run ``slads-eds export``: print the run's summary and write ``--to``."""
    import sys

    from ..export import export_run, load_any_run

    run = load_any_run(args.run)
    ax = run.get("energy_axis")
    spectra = run.get("spectra")
    if spectra is None:
        print("slads-eds export: the run holds no spectra (no acquisition journal matching its "
              "positions); exporting positions, labels, maps and curves", file=sys.stderr)
    out = export_run(run, args.to, spectra=spectra, axis=ax if spectra is not None else None,
                     beam_energy_keV=run.get("export_beam_energy_keV") or None,
                     pixel_size=run.get("export_pixel_size") or None,
                     pixel_units=str(run.get("export_pixel_units") or ""),
                     elements=run.get("export_elements"), live_time_s=run.get("export_live_time_s"),
                     energy_resolution_MnKa_eV=run.get("export_energy_resolution_MnKa_eV"))
    g = run.get("grid", list(np.shape(run["reconstruction"])))
    print(f"run: {g[0]} x {g[1]} grid, {run.get('phases', '?')} phases, "
          f"{len(run['positions'])} measured ({100 * float(run.get('sampling_fraction', 0)):.2f} %), "
          f"TD {run.get('td', float('nan')):.5f} (random {run.get('td_random', float('nan')):.5f}, "
          f"Halton {run.get('td_halton', float('nan')):.5f})")
    print(f"written: {out}")
    return 0
