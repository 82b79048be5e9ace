"""The top-level napari.yaml is the manifest npe2 loads, in the editable install and in a
wheel; the wheel carries the sample data."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_installed_manifest_is_the_top_level_file_and_valid():
    import importlib.metadata as md

    import npe2

    pm = npe2.PluginManifest.from_distribution("napari-slads-eds")
    assert pm.name == "napari-slads-eds"
    assert {w.display_name for w in pm.contributions.widgets} >= {
        "Micrograph & phases", "Simulated object", "Training", "Sampling run"}
    assert {s.key for s in pm.contributions.sample_data} >= {"gold", "glass", "gold_ready"}
    dist = md.distribution("napari-slads-eds")
    ep = [e for e in dist.entry_points if e.group == "napari.manifest"][0]
    assert ep.value == "napari_slads_eds:napari.yaml"
    import napari_slads_eds

    loaded = Path(napari_slads_eds.__file__).parent / "napari.yaml"
    assert loaded.read_text() == (REPO / "napari.yaml").read_text()


@pytest.mark.slow
def test_wheel_carries_the_top_level_manifest_and_sample_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    whl = next(tmp_path.glob("napari_slads_eds-*.whl"))
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        assert z.read("napari_slads_eds/napari.yaml").decode() == (REPO / "napari.yaml").read_text()
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari-slads-eds = napari_slads_eds:napari.yaml" in z.read(ep).decode()
    for f in (REPO / "sample_data").rglob("*"):
        if f.is_file():
            assert f"napari_slads_eds/sample_data/{f.relative_to(REPO / 'sample_data')}" in names


PKG = REPO / "src" / "napari_slads_eds"


def test_package_holds_no_symlinks():
    links = [p.relative_to(REPO) for p in PKG.rglob("*") if p.is_symlink()]
    assert links == [], f"symlinks break on Windows checkouts and in some sdists: {links}"
    assert (PKG / "napari.yaml").is_file() and (PKG / "sample_data").is_dir()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_top_level_manifest_and_sample_data_are_copies_of_the_package_files():
    # The package holds the real files (what a wheel installs and napari loads); the top
    # level keeps copies for readers of the repository.  After editing either, copy it
    # over the other:  cp napari.yaml src/napari_slads_eds/  (or the other way round).
    assert (REPO / "napari.yaml").read_bytes() == (PKG / "napari.yaml").read_bytes(), \
        "napari.yaml and src/napari_slads_eds/napari.yaml differ: copy the edited one over the other"
    top, pkg = _tree(REPO / "sample_data"), _tree(PKG / "sample_data")
    assert sorted(top) == sorted(pkg), "sample_data/ and src/napari_slads_eds/sample_data/ hold different files"
    differ = [n for n in top if top[n] != pkg[n]]
    assert differ == [], f"sample_data files differ between the top level and the package: {differ}"
