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
