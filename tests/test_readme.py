"""The README is the user's map: it must name every registered sampler and show the real commands."""

from pathlib import Path

import sampler_bench as sb

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_sampler_table_lists_every_registered_sampler():
    missing = [n for n in sb.solvers.available() if f"| `{n}` |" not in README]
    assert not missing, f"README's sampler table lacks {missing}"


def test_readme_test_command_is_the_one_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in README and "bash scripts/test.sh" in ci


def test_readme_schedule_table_lists_every_registered_schedule():
    """Each builder of ``sb.schedules.BUILDERS`` is named in a row of the README's "Schedules" table."""
    section = README.split("\n### Schedules\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    missing = [n for n in sb.schedules.BUILDERS if not any(f"`{n}`" in row.split(" | ")[0] for row in rows)]
    assert rows and not missing, f"README's schedule table lacks {missing}"
