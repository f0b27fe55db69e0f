"""[[grid]] blocks: each pairs its own samplers with its own schedules and NFE budgets, so a spec can
ask for a few samplers on a few schedules without the full cross product; bad blocks stop with one
SpecError that names the block and what to write."""

from __future__ import annotations

import sqlite3

import pytest

import sampler_bench as sb
from sampler_bench.bench import runner as R
from sampler_bench.bench.cells import expand_cells
from sampler_bench.bench.prepare import prepare_models
from sampler_bench.bench.spec import SpecError, parse_spec

BASE = """
nfe = [4, 8]
n_samples = 6
batch_size = 6
[[model]]
builtin = "gmm2d"
[[sampler]]
name = "euler"
[[schedule]]
name = "karras"
"""

TWO_BLOCKS = BASE + """
[[grid]]
samplers = ["dpmpp_2m", { name = "euler", options = {} }]
schedules = ["beta", { name = "kl_optimal" }]
nfe = [6, 4]

[[grid]]
samplers = ["heun"]
"""


def test_grid_blocks_parse_with_their_defaults():
    spec = parse_spec(TWO_BLOCKS)
    main, first, second = spec.blocks
    assert [s.name for s in main.samplers] == ["euler"] and main.nfe == (4, 8)
    assert [s.name for s in first.samplers] == ["dpmpp_2m", "euler"]
    assert [s.name for s in first.schedules] == ["beta", "kl_optimal"] and first.nfe == (4, 6)
    # solver defaults filled in, as for [[sampler]]
    assert first.samplers[0].options == sb.solvers.info("dpmpp_2m").validate({})
    # a block without schedules / nfe takes the spec's
    assert second.schedules == main.schedules and second.nfe == (4, 8)
    assert [s.name for s in spec.every_sampler] == ["euler", "dpmpp_2m", "heun"]
    assert [s.name for s in spec.every_schedule] == ["karras", "beta", "kl_optimal"]
    assert spec.every_nfe == [4, 6, 8]


def test_cells_are_the_union_of_the_blocks_without_the_cross_product():
    spec = parse_spec(TWO_BLOCKS)
    cells = expand_cells(spec, prepare_models(spec, None))
    got = {(c.sampler.name, c.schedule.name, c.nfe_budget) for c in cells}
    want = ({("euler", "karras", n) for n in (4, 8)}
            | {(s, sch, n) for s in ("dpmpp_2m", "euler") for sch in ("beta", "kl_optimal") for n in (4, 6)}
            | {("heun", "karras", n) for n in (4, 8)})
    assert got == want
    assert len(cells) == len(want) == 2 + 8 + 2  # the full cross product would be 3 x 3 x 3 = 27
    assert len({c.cell_id for c in cells}) == len(cells)


def test_a_cell_asked_for_by_two_blocks_is_one_cell_with_the_same_id():
    alone = parse_spec(BASE)
    twice = parse_spec(BASE + '\n[[grid]]\nsamplers = ["euler"]\nschedules = ["karras"]\nnfe = [8]\n')
    ids_alone = [c.cell_id for c in expand_cells(alone, prepare_models(alone, None))]
    ids_twice = [c.cell_id for c in expand_cells(twice, prepare_models(twice, None))]
    assert ids_twice == ids_alone  # so a store resumes across the two specs


def test_a_spec_of_grid_blocks_only_needs_no_top_level_samplers_or_budgets():
    spec = parse_spec('[[model]]\nbuiltin = "gmm2d"\n[[grid]]\nsamplers = ["euler"]\nnfe = [3]\n')
    assert spec.samplers == [] and len(spec.blocks) == 1 and spec.every_nfe == [3]
    assert [(c.sampler.name, c.nfe_budget) for c in expand_cells(spec, prepare_models(spec, None))] == [("euler", 3)]


def test_grid_blocks_run_end_to_end_into_the_store(tmp_path):
    # beta runs on Stable Diffusion's training table, which starts at sigma = 14.61...: the starting states too
    text = BASE.replace("nfe = [4, 8]", "nfe = [4]") + (
        '\n[[grid]]\nsamplers = ["dpmpp_2m"]\nschedules = [{ name = "beta", sigma_max = 14.614641229333639 }]\nnfe = [5]\n')
    summary = R.run_sweep(parse_spec(text), tmp_path)
    assert summary.ok == summary.total == 2 and summary.failed == 0
    with sqlite3.connect(summary.store_path) as db:
        rows = sorted(db.execute("SELECT solver, schedule, nfe_budget, nfe_counted FROM cells").fetchall())
    assert rows == [("dpmpp_2m", "beta", 5, 5), ("euler", "karras", 4, 4)]


@pytest.mark.parametrize("block, message", [
    ('colour = "red"\nsamplers = ["euler"]', r"\[\[grid\]\] #1: unknown key 'colour'.*allowed keys: samplers, schedules, nfe"),
    ('schedules = ["beta"]', r"\[\[grid\]\] #1: missing samplers = \[...\], e.g. samplers = \[\"euler\", \"dpmpp_2m\"\]"),
    ('samplers = []', r"\[\[grid\]\] #1 samplers must be a non-empty list of names or inline tables"),
    ('samplers = "euler"', r"\[\[grid\]\] #1 samplers must be a non-empty list"),
    ('samplers = [3]', r"\[\[grid\]\] #1 samplers: entry 1 must be a name or an inline table"),
    ('samplers = ["eulr"]', r"\[\[grid\]\] #1 samplers entry 1: unknown sampler 'eulr'.*did you mean 'euler'"),
    ('samplers = [{ name = "euler", options = { order = 2 } }]', r"\[\[grid\]\] #1 samplers entry 1: solver 'euler' has no option 'order'"),
    ('samplers = ["euler"]\nschedules = ["betta"]', r"\[\[grid\]\] #1 schedules entry 1: unknown schedule 'betta'.*did you mean 'beta'"),
    ('samplers = ["euler"]\nschedules = [{ name = "karras", params = { rho = "x" } }]', r"\[\[grid\]\] #1 schedules entry 1: schedule 'karras' parameter rho"),
    ('samplers = ["euler"]\nschedules = []', r"\[\[grid\]\] #1 schedules must be a non-empty list"),
    ('samplers = ["euler"]\nnfe = []', r"\[\[grid\]\] #1 nfe must be a non-empty list of budgets"),
    ('samplers = ["euler"]\nnfe = [0]', r"every NFE budget of \[\[grid\]\] #1 nfe must be >= 1"),
    ('samplers = ["reference"]', r"\[\[grid\]\] #1 samplers entry 1: 'reference' is adaptive .* cannot be swept"),
])
def test_bad_grid_blocks_stop_with_one_message_naming_the_block(block, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(BASE + "\n[[grid]]\n" + block + "\n")


def test_grid_without_budgets_anywhere_is_refused():
    with pytest.raises(SpecError, match=r"the spec needs NFE budgets, e.g. nfe = \[4, 8, 16, 32\]"):
        parse_spec('[[model]]\nbuiltin = "gmm2d"\n[[grid]]\nsamplers = ["euler"]\n')
    with pytest.raises(SpecError, match="must be written as \\[\\[grid\\]\\] tables"):
        parse_spec(BASE.replace("nfe = [4, 8]", "nfe = [4, 8]\ngrid = 3"))
