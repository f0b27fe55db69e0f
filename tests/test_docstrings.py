"""Every registered solver and schedule says where it comes from (issue #15's standard: "docstring citing the
paper and equation"), so a new one without its citation fails CI.

The docstring checked is the one a reader meets next to the code: the registered step (or run) function's
for a solver, the builder's for a schedule. It must name

* a paper: an arXiv id (``arXiv 2206.00927``) or authors with a year (``Dormand & Prince (1980)``), and
* where in it: an equation, algorithm, section, theorem, proposition, table or appendix with its number
  (``eq. 3.4``, ``Alg. 2``, ``§3.3``, ``Thm 3.1``, ``Sec. II``), or, where the paper's numbering could not
  be verified, the reference implementation at a pinned commit (``qsh-zh/deis@a30709f
  ``th_deis/sampler.py`` ``get_sampler_t_ab``), which locates the update exactly;

or, for a schedule defined by code (ComfyUI's ``simple``, or ``beta`` whose paper section is unverified), the
repository, file and function it reproduces: ``owner/repo`` (or ComfyUI, diffusers, k-diffusion) with a
``file.py`` and a ``function`` in double backquotes.
"""

import inspect
import re

import pytest

import sampler_bench as sb
from sampler_bench.solvers import registry

#: arXiv 2206.00927, arXiv:2206.00927 or a bare new-style id.
ARXIV = re.compile(r"\b\d{4}\.\d{4,5}\b")
#: Author(s) and year: "Dormand & Prince (1980)", "Kitagawa (1996)", "Hairer et al. (1993)", "Maruyama 1955".
AUTHOR_YEAR = re.compile(r"[A-Z][\w-]+(?: (?:&|and) [A-Z][\w-]+| et al\.)?,? \(?(?:19|20)\d\d\b")
#: eq. 5, eqs. 6-7, Eq. (3.4), equation 12, Alg. 2, Algorithm 1, §3.3, Sec. II, Section 4, Thm 3.1,
#: Prop. 6, Table 3, App. D.3, Appendix A.8, Lemma 1.
WHERE = re.compile(
    r"(?:\beqs?\.|\bequations?\b|\balg(?:orithm)?s?\.?|§|\bsec(?:tion)?s?\.?|\bthm\.?|\btheorems?\b|"
    r"\bprop(?:osition)?s?\.?|\btables?\b|\bapp(?:endix)?\.?|\blemmas?\b)\s*\(?(?:\d|[IVX]+\b|[A-Z]\.?\d)",
    re.IGNORECASE,
)
#: "ComfyUI ``comfy/samplers.py`` ``simple_scheduler``": a repository, a file and a function.
CODE = re.compile(r"(?:[\w-]+/[\w.-]+|ComfyUI|diffusers|k-diffusion)\b.*``[\w/.-]+\.py``.*``\w+``", re.S)
#: "qsh-zh/deis@a30709f ``th_deis/sampler.py`` ``get_sampler_t_ab``": the reference implementation at a pinned
#: commit, which locates a method exactly where the paper's own numbering could not be verified.
PINNED_CODE = re.compile(r"[\w-]+/[\w.-]+@[0-9a-f]{7,40}\s+``[\w/.-]+\.py``\s+``\w+``")


def citation_problems(doc: str | None, allow_code: bool = False) -> list[str]:
    """What a docstring lacks of a citation (empty when it cites a paper and a place in it)."""
    doc = inspect.cleandoc(doc or "")
    if not doc:
        return ["no docstring"]
    if allow_code and CODE.search(doc):
        return []  # a schedule defined by code (ComfyUI's): its repository, file and function
    problems = []
    if not (ARXIV.search(doc) or AUTHOR_YEAR.search(doc)):
        problems.append("no paper (an arXiv id or authors with a year)")
    if not (WHERE.search(doc) or PINNED_CODE.search(doc)):
        problems.append("no equation/algorithm/section reference with its number (nor a pinned reference "
                        "implementation: owner/repo@commit ``file.py`` ``function``)")
    return problems


def _solver_fn(name):
    info = registry.info(name)
    return info.step or info.run


@pytest.mark.parametrize("name", registry.available())
def test_every_registered_solver_docstring_cites_paper_and_equation(name):
    fn = _solver_fn(name)
    problems = citation_problems(fn.__doc__)
    assert not problems, (
        f"solver {name!r} ({fn.__module__}.{fn.__qualname__}): its docstring has {'; '.join(problems)}; "
        "cite the paper (arXiv id) and the equation, algorithm or section it implements")


@pytest.mark.parametrize("name", sorted(sb.schedules.BUILDERS))
def test_every_registered_schedule_docstring_cites_paper_and_equation(name):
    fn = sb.schedules.BUILDERS[name]
    problems = citation_problems(fn.__doc__, allow_code=True)
    assert not problems, (
        f"schedule {name!r} ({fn.__module__}.{fn.__qualname__}): its docstring has {'; '.join(problems)}; "
        "cite the paper and equation/section, or for a code-only schedule the repository, file and function")


@pytest.mark.parametrize("doc, ok", [
    ("EDM's Heun (Karras et al., arXiv 2206.00364, Alg. 1).", True),
    ("DPM-Solver (arXiv 2206.00927) eq. (3.4).", True),
    ("DOP853 (Dormand & Prince (1980); Hairer et al. (1993) Sec. II).", True),
    ("DPM-Solver (arXiv 2206.00927).", False),          # a paper, but no place in it
    ("EDM's Heun, Algorithm 2.", False),                 # a place, but no paper
    ("The second-order Heun step.", False),
    (None, False),
])
def test_the_citation_check_itself(doc, ok):
    assert (citation_problems(doc) == []) is ok
    assert (citation_problems("ComfyUI ``comfy/samplers.py`` ``simple_scheduler``", allow_code=True) == [])
    assert citation_problems("ComfyUI ``comfy/samplers.py`` ``simple_scheduler``") != []
