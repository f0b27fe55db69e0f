"""Start-up cost: the command line's help and ``import sampler_bench`` do not import torch (issue #13:
importing torch alone costs seconds), while ``sb.sample`` & co. still resolve on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = "import sys, runpy; sys.argv = {argv!r}; {body}; print('torch' in sys.modules)"


def _torch_imported(body: str, argv=("x",)) -> bool:
    out = subprocess.run([sys.executable, "-c", _PROBE.format(argv=list(argv), body=body)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("argv", [["sampler-bench", "--help"], ["sampler-bench", "sweep", "--help"],
                                  ["sampler-bench", "report", "--help"], ["sampler-bench", "--version"]])
def test_help_does_not_import_torch(argv):
    body = ("from sampler_bench.cli import main\n"
            "try:\n    main(prog_name='sampler-bench')\nexcept SystemExit:\n    pass")
    assert not _torch_imported(body, argv)


def test_importing_the_package_does_not_import_torch_but_the_api_resolves():
    assert not _torch_imported("import sampler_bench as sb; sb.__version__")
    assert _torch_imported("import sampler_bench as sb; sb.sample; sb.schedules.karras; sb.solvers.available; sb.load_model")
    import sampler_bench as sb

    assert callable(sb.sample) and callable(sb.load_model) and "euler" in sb.solvers.available()
    with pytest.raises(AttributeError):
        sb.no_such_name


_MAIN = "from sampler_bench.cli import main\ntry:\n    main(prog_name='sampler-bench')\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("argv", [["sampler-bench", "list"], ["sampler-bench", "list", "samplers"]])
def test_list_does_not_import_torch(argv):
    assert not _torch_imported(_MAIN, argv)


_BAD_SPECS = {  # the careless user's spec mistakes that the names alone reveal
    "toml": "nfe = [",
    "top-level key": "nfes = [4]",
    "budget": "nfe = [0]",
    "model": 'nfe = [4]\n[[model]]\nbuiltin = "gmm2e"',
    "sampler": 'nfe = [4]\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "eular"',
    "excluded sampler": 'nfe = [4]\nall_samplers = true\nexclude_samplers = ["hen"]\n[[model]]\nbuiltin = "gmm2d"',
    "schedule": 'nfe = [4]\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "euler"\n[[schedule]]\nname = "karas"',
    "metric": 'nfe = [4]\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "euler"\n[[metric]]\nname = "fid"',
    "sampler key": 'nfe = [4]\n[[model]]\nbuiltin = "gmm2d"\n[[sampler]]\nname = "euler"\noption = {}',
}


@pytest.mark.parametrize("mistake", sorted(_BAD_SPECS))
def test_spec_mistakes_in_names_stop_before_torch_is_imported(tmp_path, mistake):
    spec = tmp_path / "bad.toml"
    spec.write_text(_BAD_SPECS[mistake] + "\n")
    out = subprocess.run([sys.executable, "-c", _PROBE.format(
        argv=["sampler-bench", "sweep", str(spec), "--out", str(tmp_path / "o")], body=_MAIN)],
        capture_output=True, text=True, timeout=120)
    assert "Error: " in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False", f"{mistake}: torch was imported"
    assert not (tmp_path / "o").exists()  # nothing written for a spec that cannot run
