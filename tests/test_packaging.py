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
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "Project-URL: Documentation, https://" in meta and "Classifier: Framework :: napari" in meta
        assert "Requires-Dist: tensorflow>=" in meta and "tensorflow-cpu" not in meta
    for f in (REPO / "sample_data").rglob("*"):
        if f.is_file():
            assert f"napari_slads_eds/sample_data/{f.relative_to(REPO / 'sample_data')}" in names
    # the one-click demo's pre-trained models (issue 16)
    demo = PKG / "demo_models"
    shipped = [f for f in demo.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    assert any(f.suffix == ".keras" for f in shipped)
    for f in shipped:
        assert f"napari_slads_eds/demo_models/{f.relative_to(demo).as_posix()}" in names


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


def _requirements():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = [Requirement(r) for r in project["dependencies"]]
    extras = {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}
    return core, extras


def _pins(name: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            n, v = line.split("==")
            pins[canonicalize_name(n)] = v
    return pins


def test_core_dependencies_are_lower_bounds_only():
    # Upper bounds and exact pins in the core move a user's napari environment or fail to
    # install into it; exact versions belong in constraints.txt.
    core, _ = _requirements()
    capped = [str(r) for r in core if any(s.operator not in (">=", "!=") for s in r.specifier)]
    assert capped == []
    names = {r.name for r in core}
    assert "tensorflow" in names and "tensorflow-cpu" not in names


def test_constraints_pin_every_requirement_within_its_bounds():
    from packaging.utils import canonicalize_name

    core, extras = _requirements()
    pins = _pins("constraints.txt")
    for r in core + extras["testing"] + extras["all"]:
        if r.marker is not None and not r.marker.evaluate():
            continue
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} is not pinned in constraints.txt (run tools/make_constraints.py)"
        assert r.specifier.contains(pins[name]), f"constraints.txt pins {name}=={pins[name]} outside {r}"


def test_readme_commands_install_with_the_constraints_file():
    text = (REPO / "README.md").read_text()
    for marker in ("demo-command", "test-command"):
        block = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
        cmd = [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("```")]
        assert len(cmd) == 1, f"the README's {marker} is one command line"
        assert "pip install -c constraints.txt " in cmd[0], cmd[0]


def test_constraints_oldest_pins_the_lower_bounds():
    # constraints-oldest.txt is the environment the lower bounds were tested in: every pin
    # is a requirement's lower bound (release numbers compared, 2.3 == 2.3.0).
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    core, extras = _requirements()
    bounds = {}
    for r in core + extras["testing"] + extras["all"]:
        lows = [s.version for s in r.specifier if s.operator == ">="]
        if lows:
            bounds[canonicalize_name(r.name)] = Version(lows[0])
    oldest = _pins("constraints-oldest.txt")
    assert {"numpy", "scipy", "scikit-image", "tensorflow", "keras", "napari"} <= set(oldest)
    for name, pin in oldest.items():
        assert name in bounds, f"constraints-oldest.txt pins {name}, which pyproject.toml does not bound"
        assert Version(pin).release[:len(bounds[name].release)] == bounds[name].release \
            and Version(pin) >= bounds[name], f"{name}: oldest pin {pin}, lower bound {bounds[name]}"
    core_names = {canonicalize_name(r.name) for r in core}
    assert core_names <= set(oldest), f"core lower bounds not tested: {sorted(core_names - set(oldest))}"


def test_manifest_reader_claims_eds_files_not_plain_images():
    import yaml

    for manifest in (REPO / "napari.yaml", PKG / "napari.yaml"):
        (reader,) = yaml.safe_load(manifest.read_text())["contributions"]["readers"]
        patterns = set(reader["filename_patterns"])
        assert {"*.bcf", "*.msa", "*.hspy", "*.npz"} <= patterns
        assert patterns.isdisjoint({"*.tif", "*.tiff", "*.png", "*.jpg", "*.jpeg", "*.bmp"}), patterns


def test_napari_hub_metadata():
    # The napari hub shows the summary, the README and these project URLs.
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert len(project["description"]) > 20 and project["readme"] == "README.md"
    assert "Framework :: napari" in project["classifiers"]
    urls = project["urls"]
    for key in ("Documentation", "Source Code", "Bug Tracker", "User Support"):
        assert urls.get(key, "").startswith("https://"), key
