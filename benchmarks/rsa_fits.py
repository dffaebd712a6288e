"""Benchmark and self-check of the papers' model fits: CPU time per source (one thread), and the paper's numbers.

Prints, all measured in this one run:

* Study 2: with ``--human2 FILE`` (Yoon et al.'s ``speaker_production.csv``), the polite speaker fitted to it with
  joint semantics (the paper's) and with fixed semantics: the weights per goal beside the paper's Table 1, r² beside
  the paper's .97, and the CPU seconds of the estimate and of the bootstrap. Without a file, the same on choices
  sampled from the model (3,600 trials).
* Study 1: the knowledge-sensitive listener on synthetic bets (6 stories x 9 cells x 8 trials): CPU seconds.

Run from the repository root: ``python -m benchmarks.rsa_fits [--human2 speaker_production.csv] [--resamples 200]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from schemas.fits import FitSettings
from steps import fit as fits
from steps import rsa_knowledge, rsa_polite
from steps.human import load_human_table


def _study2(counts: np.ndarray, units: np.ndarray, resamples: int) -> None:
    semantics = rsa_polite.load_literal_semantics()
    for mode in ("joint", "fixed"):
        point = rsa_polite.fit_polite(counts, semantics, seed=1, semantics_mode=mode, resamples=0)
        full = rsa_polite.fit_polite(counts, semantics, seed=1, semantics_mode=mode, unit_counts=units, resamples=resamples)
        print(f"\nStudy 2, {mode} semantics: alpha {full.params.alpha:.2f}, negation cost {full.params.cost:.2f}, "
              f"r² {full.correlation ** 2:.3f} (paper: .97)")
        print(f"  CPU s: estimate {point.cpu_seconds:.1f}, estimate + {resamples} resamples {full.cpu_seconds:.1f} "
              f"(wall {full.seconds:.1f})")
        print("  goal            omega_inf omega_soc omega_pres  phi   emphasis | paper: inf  soc  pres  phi")
        for g, goal in enumerate(rsa_polite.GOALS):
            w, phi = full.params.omega[g], full.params.phi[g]
            paper = rsa_polite.PAPER_WEIGHTS[goal]
            print(f"  {goal:14s} {w[0]:9.2f} {w[1]:9.2f} {w[2]:10.2f} {phi:5.2f} "
                  f"{rsa_polite.informational_emphasis(w, phi):9.2f} |      {paper[0]:.2f} {paper[1]:.2f} {paper[2]:.2f} {paper[3]:.2f}")


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--human2", help="Yoon et al.'s speaker_production.csv (default: choices sampled from the model)")
    parser.add_argument("--resamples", type=int, default=FitSettings().resamples)
    args = parser.parse_args()
    if args.human2:
        human = load_human_table(2, args.human2)
        print(f"{human.path}: {len(human.frame)} trials from {human.participants} participants")
        [(_, counts, units)] = fits.study2_sources(None, human.frame)
    else:
        truth = rsa_polite.PoliteParameters(4.0, 0.5, np.array([[0.6, 0.05, 0.35], [0.15, 0.6, 0.25], [0.35, 0.25, 0.4]]),
                                            np.array([0.8, 0.3, 0.5]), rsa_polite.load_literal_semantics().accept)
        counts = rsa_polite.simulate_counts(truth, 300, np.random.default_rng(3))
        units = np.zeros((300, 3, 4, 8))
        for g in range(3):
            for s in range(4):
                units[np.arange(300), g, s, np.repeat(np.arange(8), counts[g, s].astype(int))] = 1
        print("choices sampled from the model: 300 per goal x state")
    _study2(counts, units, args.resamples)
    priors = rsa_knowledge.smoothed_prior(np.array([[0, 1, 4, 15]] * 6))
    rows = rsa_knowledge.simulate_bets(3.0, 0.05, priors, 8, np.random.default_rng(1))
    counts1 = np.zeros((6, 3, 4, 4))
    units1 = np.zeros((6, 6, 3, 4, 4))
    for i, a, w, *bets in rows:
        counts1[int(i), int(a) - 1, int(w)] += bets
        units1[int(i), int(i), int(a) - 1, int(w)] += bets
    fit = rsa_knowledge.fit_knowledge(counts1, priors, seed=1, unit_counts=units1, resamples=args.resamples)
    print(f"\nStudy 1 (synthetic, {len(rows)} trials): alpha {fit.aware.alpha:.2f} (true 3), access gain {fit.access_gain:.3f}; "
          f"CPU s with {args.resamples} resamples, both listeners: {fit.cpu_seconds:.1f}")


if __name__ == "__main__":
    main()
