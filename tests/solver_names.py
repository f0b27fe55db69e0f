"""The solver names the registry must hold: one list, pinned, so a rename or a lost registration fails
loudly (tests/test_solver_names.py) instead of silently skipping the parity and order tests that name it.

Adding a solver? Add its name here (keep the list sorted), in its family's group.
"""

EXPECTED_SOLVERS = sorted([
    # first order and Heun (solvers/first_order.py)
    "euler", "heun",
    # DPM-Solver singlestep (solvers/dpm_solver.py) and DPM-Solver++ (solvers/dpmpp.py)
    "dpm_2", "dpm_solver_1", "dpm_solver_2", "dpm_solver_3",
    "dpmpp_2m", "dpmpp_2s", "dpmpp_3m", "dpmpp_3s",
    # Adams family (solvers/adams.py) and UniPC (solvers/unipc.py)
    "deis", "deis_rho", "ipndm", "lms", "unipc",
    # ComfyUI / diff-sampler ODE samplers (solvers/adams.py, solvers/dpmpp.py)
    "deis_logrho", "gradient_estimation", "ipndm_v", "pndm", "res_multistep",
    # adaptive DPM-Solver-12/23 (solvers/dpm_adaptive.py)
    "dpm_adaptive",
    # adaptive yardsticks (solvers/reference.py; CLD's in the CLD subpackage)
    "reference", "cld_reference",
    # stochastic (solvers/ancestral.py, sde_dpmpp.py, er_sde.py, euler_maruyama.py, edm_stochastic.py)
    "ddim", "euler_ancestral", "dpmpp_2s_ancestral",
    "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde",
    "er_sde_1", "er_sde_2", "er_sde_3",
    "euler_maruyama", "edm_stochastic",
    # issue #15 SDE samplers (solvers/ancestral.py, sa_solver.py, seeds.py, restart.py)
    "dpm_2_ancestral", "ddpm", "sa_solver", "seeds_2", "seeds_3", "restart",
    # critically-damped Langevin diffusion (CLD samplers)
    "gddim", "gddim_sde", "cld_euler", "cld_euler_maruyama", "cld_heun",
    # blurring diffusion (BDM samplers; its yardstick bdm_reference too)
    "gddim_bdm", "bdm_euler", "bdm_euler_maruyama", "bdm_heun", "bdm_reference",
    # the Yukawa process (solvers/yukawa: weighted particles with resampling; Yukawa models only)
    "yukawa_smc",
])
