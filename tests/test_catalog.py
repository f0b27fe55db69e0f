"""The catalogue shipped with the package (sampler_bench/assets/catalog.json) is what the live
registries say, and it is only trusted while the sources it was built from are unchanged."""

from __future__ import annotations

import json

import pytest

from sampler_bench import catalog, catalog_file


def test_the_shipped_catalogue_is_the_live_one():
    shipped = catalog_file.shipped()
    assert shipped is not None, ("sampler_bench/assets/catalog.json is missing or was built from other sources; "
                                 "run `python -m sampler_bench.catalog` and commit the file")
    assert shipped == json.loads(json.dumps(catalog.live())), "run `python -m sampler_bench.catalog` and commit the file"


def test_a_catalogue_of_other_sources_is_not_trusted(tmp_path, monkeypatch):
    path = tmp_path / "catalog.json"
    data = {"format": catalog_file.FORMAT, "fingerprint": "0" * 64, "catalog": {"samplers": [{"name": "only_this"}]}}
    path.write_text(json.dumps(data))
    monkeypatch.setattr(catalog_file, "CATALOG_FILE", str(path))  # absolute: the package root is ignored
    catalog_file.shipped.cache_clear()
    try:
        assert catalog_file.shipped() is None  # stale fingerprint
        data["fingerprint"] = catalog_file.source_fingerprint()
        path.write_text(json.dumps(data))
        catalog_file.shipped.cache_clear()
        assert catalog_file.shipped() == data["catalog"]  # the fingerprint is what decides
        path.write_text("{not json")
        catalog_file.shipped.cache_clear()
        assert catalog_file.shipped() is None
    finally:
        catalog_file.shipped.cache_clear()


def test_the_fingerprint_changes_with_any_source(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    (root / "specs").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "specs" / "s.toml").write_text("nfe = [4]\n")
    monkeypatch.setattr(catalog_file, "package_root", lambda: root)
    before = catalog_file.source_fingerprint()
    (root / "a.py").write_text("x = 2\n")
    after_py = catalog_file.source_fingerprint()
    (root / "specs" / "s.toml").write_text("nfe = [5]\n")
    after_toml = catalog_file.source_fingerprint()
    assert len({before, after_py, after_toml}) == 3


def test_names_registered_at_run_time_are_known_to_specs():
    """A user's own solver, registered before parsing, is not in the shipped catalogue: the live
    registry (imported by then) is consulted too."""
    import sampler_bench as sb
    from sampler_bench.bench.spec import known_names, parse_spec
    from sampler_bench.solvers import registry

    name = "test_catalog_own_euler"
    euler = sb.solvers.info("euler")
    registry.register(name, order=1, description="a user's solver", paper="-")(euler.step)
    try:
        assert name in known_names("samplers")
        spec = parse_spec(f'nfe = [4]\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "{name}"\n')
        assert [s.name for s in spec.samplers] == [name]
    finally:
        registry._REGISTRY.pop(name, None)
