"""Goodman & Stuhlmüller (2013)'s knowledge-sensitive listener, from the paper's equations, and its maximum-likelihood fit.

The model (Topics in Cognitive Science 5: 173-184), for Study 1's statements "I have looked at a of the 3 X.
o of the X have the property":

- 3 objects; the state s = how many have the property (0..3), with a prior P(s) per story: the source's own
  answers to the prior question (humans: ``prior``; models: ``Prior_A``), smoothed by adding 1/2 to each
  state's count (a Jeffreys prior), as replications of the paper did with elicited priors.
- The speaker looks at a objects (access, 1..3) and sees o of them with the property: P(o | s, a) is
  hypergeometric. Her belief: P(s | o, a) ∝ P(o | s, a) P(s).
- Utterances: the statement's number w; number words have lower-bound semantics ("w of them" is true when
  s >= w, the paper's assumption); "0 of them" is then always true and carries no literal information.
- Literal listener     L0(s | w) ∝ [s >= w] P(s).
- Speaker              S1(w | o, a) ∝ exp(α E_P(s|o,a)[ln L0(s | w)]): a statement that may be false given what
  she saw has utility −∞ and is never made.
- Pragmatic listener   L1(s | w, a) ∝ P(s) Σ_o P(o | s, a) S1(w | o, a): the listener knows the access.
- Access-blind listener: L1(s | w, a = 3) whatever the access (it takes every speaker to have seen all 3): the
  comparison that shows whether a source uses the speaker's access at all.
- Bets: the listener's belief with a lapse ε, (1 − ε) L1 + ε / 4, since real bets put money on states the
  listener rules out. Free parameters: α and ε, fitted per source and per listener.

Fit (:func:`fit_knowledge`): maximum likelihood of soft counts n[story, access, w, s] (each trial's bets,
normalised to sum 1, count as one observation spread over the states: the cross-entropy), SLSQP over
(log α, logit ε), several seeded starts. Intervals: percentile bootstrap over units (participants or items),
both listeners refitted on each resample, so the access gain (log-likelihood per observation, access-aware
minus access-blind) gets an interval too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from math import comb
from typing import Optional

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

STATES = (0, 1, 2, 3)
ACCESS = (1, 2, 3)
ALPHA_BOUNDS = (0.05, 40.0)
LAPSE_BOUNDS = (1e-4, 0.5)
PRIOR_PSEUDOCOUNT = 0.5
DEFAULT_STARTS = 4
DEFAULT_RESAMPLES = 200  # as schemas.fits.DEFAULT_RESAMPLES
BOOTSTRAP_METHOD = "both listeners refitted to convergence from the estimates (SLSQP)"
LISTENERS = ("access_aware", "access_blind")

# P(o | s, a): (access index, s, o)
HYPERGEOMETRIC = np.array([[[comb(s, o) * comb(3 - s, a - o) / comb(3, a) if o <= a else 0.0 for o in STATES] for s in STATES]
                           for a in ACCESS])
LOWER_BOUND = np.array([[1.0 if s >= w else 0.0 for s in STATES] for w in STATES])  # [[w]](s): (w, s)


def smoothed_prior(answers: np.ndarray) -> np.ndarray:
    """A prior over 0..3 from counts of prior answers (any shape (..., 4)), each state's count plus 1/2."""
    counts = np.asarray(answers, float) + PRIOR_PSEUDOCOUNT
    return counts / counts.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class _Utilities:
    """The speaker's expected log literal-listener probability per (story, access, o, w), fixed by the priors."""

    priors: np.ndarray  # (stories, 4)
    utility: np.ndarray  # (stories, 3 access, 4 o, 4 w), -inf where w may be false
    possible: np.ndarray  # (3 access, 4 o): can the speaker see o with access a

    @classmethod
    def of(cls, priors: np.ndarray) -> "_Utilities":
        priors = np.asarray(priors, float)
        l0 = LOWER_BOUND[None] * priors[:, None, :]  # (i, w, s)
        l0 = l0 / l0.sum(axis=2, keepdims=True)
        joint = HYPERGEOMETRIC[None] * priors[:, None, :, None]  # (i, a, s, o)
        evidence = joint.sum(axis=2)  # (i, a, o)
        with np.errstate(invalid="ignore", divide="ignore"):
            belief = np.where(evidence[:, :, None, :] > 0, joint / evidence[:, :, None, :], 0.0)  # (i, a, s, o)
            log_l0 = np.where(l0 > 0, np.log(np.where(l0 > 0, l0, 1.0)), 0.0)
        expected = np.einsum("iaso,iws->iaow", belief, log_l0)
        may_be_false = np.einsum("iaso,iws->iaow", belief, (l0 <= 0).astype(float)) > 0
        utility = np.where(may_be_false, -np.inf, expected)
        return cls(priors, utility, HYPERGEOMETRIC.sum(axis=1) > 0)


def listener(alpha: np.ndarray, utilities: _Utilities, access_blind: bool = False) -> np.ndarray:
    """L1(s | w, a) for each alpha in a batch: (B,) -> (B, stories, 3 access, 4 w, 4 s); NaN where w > a."""
    alpha = np.atleast_1d(np.asarray(alpha, float))
    scaled = alpha[:, None, None, None, None] * utilities.utility[None]  # (B, i, a, o, w)
    top = np.max(scaled, axis=4, keepdims=True)
    s1 = np.exp(scaled - top)
    s1 = s1 / s1.sum(axis=4, keepdims=True)
    s1 = np.where(utilities.possible[None, None, :, :, None], s1, 0.0)
    joint = np.einsum("aso,biaow->biaws", HYPERGEOMETRIC, s1)
    joint = joint * utilities.priors[None, :, None, None, :]
    total = joint.sum(axis=4, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        post = np.where(total > 0, joint / np.where(total > 0, total, 1.0), np.nan)
    if access_blind:
        post = np.broadcast_to(post[:, :, 2:3], post.shape).copy()
    return post


def bet_distribution(alpha: np.ndarray, lapse: np.ndarray, utilities: _Utilities, access_blind: bool = False) -> np.ndarray:
    """Predicted bets (1 - lapse) L1 + lapse / 4, batched like :func:`listener`."""
    lapse = np.atleast_1d(np.asarray(lapse, float))[:, None, None, None, None]
    return (1 - lapse) * listener(alpha, utilities, access_blind) + lapse / 4


# ---------------------------------------------------------------- maximum likelihood


@dataclass
class ListenerFit:
    """One listener (access-aware or access-blind) fitted to one source."""

    listener: str
    alpha: float
    lapse: float
    log_likelihood: float
    observations: float
    predicted: np.ndarray  # (stories, 3 access, 4 w, 4 s)
    correlation: float
    notes: list[str] = field(default_factory=list)


@dataclass
class KnowledgeFit:
    """Both listeners fitted to one source, with the access gain and bootstrap draws."""

    aware: ListenerFit
    blind: ListenerFit
    counts: np.ndarray  # (stories, 3, 4, 4) soft counts
    utilities: _Utilities
    seed: int
    seconds: float = 0.0  # wall time, estimates and bootstrap
    cpu_seconds: float = 0.0  # CPU time (one thread)
    units: int = 0
    bootstrap: Optional[np.ndarray] = None  # (resamples, len(estimate_names()))

    @property
    def access_gain(self) -> float:
        """Log-likelihood per observation of the access-aware listener minus the access-blind one's (> 0: access helps)."""
        return (self.aware.log_likelihood - self.blind.log_likelihood) / self.aware.observations

    def estimates(self) -> dict[tuple[str, str], float]:
        """(listener, name) -> estimate, in :func:`estimate_names` order."""
        out: dict[tuple[str, str], float] = {}
        for fit in (self.aware, self.blind):
            out[(fit.listener, "alpha")] = fit.alpha
            out[(fit.listener, "lapse")] = fit.lapse
            out[(fit.listener, "correlation")] = fit.correlation
            out[(fit.listener, "log_likelihood_per_observation")] = fit.log_likelihood / fit.observations
        out[("access_aware", "access_gain_per_observation")] = self.access_gain
        return out


def estimate_names() -> list[tuple[str, str]]:
    """The order of :meth:`KnowledgeFit.estimates` and of the bootstrap columns."""
    names = [(lis, n) for lis in LISTENERS for n in ("alpha", "lapse", "correlation", "log_likelihood_per_observation")]
    return names + [("access_aware", "access_gain_per_observation")]


_BOUNDS = [(np.log(ALPHA_BOUNDS[0]), np.log(ALPHA_BOUNDS[1])),
           (np.log(LAPSE_BOUNDS[0] / (1 - LAPSE_BOUNDS[0])), np.log(LAPSE_BOUNDS[1] / (1 - LAPSE_BOUNDS[1])))]
_STEP = 1e-6


def _params(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.exp(theta[:, 0]), 1 / (1 + np.exp(-theta[:, 1]))


def _objective(counts: np.ndarray, utilities: _Utilities, access_blind: bool):
    weights = counts / counts.sum()
    present = weights.sum(axis=3) > 0  # (i, a, w): cells with data

    def values(thetas: np.ndarray) -> np.ndarray:
        alpha, lapse = _params(thetas)
        bets = bet_distribution(alpha, lapse, utilities, access_blind)
        bets = np.where(present[None, ..., None], bets, 1.0)
        return -np.einsum("biaws,iaws->b", np.log(bets), weights)

    offsets = np.vstack([np.zeros(2), np.eye(2) * _STEP, -np.eye(2) * _STEP])

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        v = values(theta[None, :] + offsets)
        return float(v[0]), (v[1:3] - v[3:5]) / (2 * _STEP)

    return fun


def _minimise(fun, start: np.ndarray) -> optimize.OptimizeResult:
    lows, highs = [b[0] for b in _BOUNDS], [b[1] for b in _BOUNDS]
    return optimize.minimize(fun, np.clip(start, lows, highs), jac=True, method="SLSQP", bounds=_BOUNDS,
                             options={"maxiter": 300, "ftol": 1e-12})


def _starts(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [np.array([np.log(2.0), np.log(0.05 / 0.95)])] + [
        np.array([rng.uniform(np.log(0.2), np.log(20.0)), rng.uniform(-6.0, -1.0)]) for _ in range(count - 1)]


def _correlation(counts: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r over access x observe x state between the mean observed bets and the predictions (weighted over stories)."""
    n = counts.sum(axis=3)  # (i, a, w)
    cell_n = n.sum(axis=0)  # (a, w)
    keep = cell_n > 0
    if keep.sum() < 1:
        return float("nan")
    observed = counts.sum(axis=0)[keep] / cell_n[keep][:, None]
    pred = np.nan_to_num(np.einsum("iaw,iaws->aws", n, np.nan_to_num(predicted)))[keep] / cell_n[keep][:, None]
    x, y = observed.ravel(), pred.ravel()
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _fit_listener(counts: np.ndarray, utilities: _Utilities, access_blind: bool,
                  starts: list[np.ndarray]) -> tuple[ListenerFit, np.ndarray]:
    fun = _objective(counts, utilities, access_blind)
    best = min((_minimise(fun, s) for s in starts), key=lambda r: r.fun)
    alpha, lapse = (float(v[0]) for v in _params(best.x[None, :]))
    predicted = bet_distribution(np.array([alpha]), np.array([lapse]), utilities, access_blind)[0]
    total = float(counts.sum())
    fit = ListenerFit(LISTENERS[int(access_blind)], alpha, lapse, -best.fun * total, total, predicted, _correlation(counts, predicted))
    if not best.success:
        fit.notes.append(f"optimiser: {best.message}")
    fit.notes += bound_notes(alpha, lapse)
    return fit, best.x


def bound_notes(alpha: float, lapse: float) -> list[str]:
    """What an estimate at a bound means (such a fit describes the source poorly: read its other numbers with care)."""
    notes = []
    if alpha >= ALPHA_BOUNDS[1] * 0.999:
        notes.append(f"alpha at its upper bound {ALPHA_BOUNDS[1]:g} (near-deterministic bets)")
    if alpha <= ALPHA_BOUNDS[0] * 1.001:
        notes.append(f"alpha at its lower bound {ALPHA_BOUNDS[0]:g} (the bets do not follow an informative speaker)")
    if lapse >= LAPSE_BOUNDS[1] * 0.999:
        notes.append(f"lapse at its upper bound {LAPSE_BOUNDS[1]:g} (half the bets look random to the model)")
    return notes


def check_counts(counts: np.ndarray) -> np.ndarray:
    """``counts`` as a float (stories, 3 access, 4 w, 4 s) array; ValueError for the wrong shape, negative values or
    a statement the speaker cannot make (w > a)."""
    counts = np.asarray(counts, float)
    if counts.ndim != 4 or counts.shape[1:] != (3, 4, 4) or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"counts must be a non-negative (stories, 3, 4, 4) array, got shape {counts.shape}")
    for a in ACCESS:
        if counts[:, a - 1, a + 1:].sum() > 0:
            raise ValueError(f"counts hold a statement of more than {a} with access {a}, which the speaker cannot make")
    if counts.sum() <= 0:
        raise ValueError("no observations to fit")
    return counts


def fit_knowledge(counts: np.ndarray, priors: np.ndarray, seed: int = 0, starts: int = DEFAULT_STARTS,
                  unit_counts: Optional[np.ndarray] = None, resamples: int = DEFAULT_RESAMPLES) -> KnowledgeFit:
    """Fit the access-aware and the access-blind listener to soft counts (stories x 3 access x 4 w x 4 s) with
    ``priors`` (stories x 4). ``unit_counts`` (units x stories x 3 x 4 x 4) enables the bootstrap. Deterministic given ``seed``."""
    counts = check_counts(counts)
    started, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1):
        utilities = _Utilities.of(priors)
        rng = np.random.default_rng(seed)
        first = _starts(rng, starts)
        aware, aware_x = _fit_listener(counts, utilities, False, first)
        blind, blind_x = _fit_listener(counts, utilities, True, first)
        fit = KnowledgeFit(aware, blind, counts, utilities, seed)
        if unit_counts is not None:
            fit.units = len(unit_counts)
            if resamples > 0 and len(unit_counts) >= 2:
                fit.bootstrap = _bootstrap(np.asarray(unit_counts, float), utilities, (aware_x, blind_x), rng, resamples)
    fit.seconds, fit.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return fit


def _bootstrap(unit_counts: np.ndarray, utilities: _Utilities, thetas: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
               resamples: int) -> np.ndarray:
    units = len(unit_counts)
    flat = unit_counts.reshape(units, -1)
    weights = rng.multinomial(units, np.full(units, 1 / units), size=resamples)
    draws = []
    for w in weights:
        counts = (w @ flat).reshape(unit_counts.shape[1:])
        if counts.sum() <= 0:
            continue
        fits = []
        for blind, theta in zip((False, True), thetas):
            fit, _ = _fit_listener(counts, utilities, blind, [theta])
            fits.append(fit)
        row = []
        for fit in fits:
            row += [fit.alpha, fit.lapse, fit.correlation, fit.log_likelihood / fit.observations]
        row.append((fits[0].log_likelihood - fits[1].log_likelihood) / fits[0].observations)
        draws.append(row)
    return np.array(draws).reshape(len(draws), len(estimate_names()))


def simulate_bets(alpha: float, lapse: float, priors: np.ndarray, trials_per_cell: int, rng: np.random.Generator,
                  access_blind: bool = False, concentration: float = 50.0) -> np.ndarray:
    """Synthetic bets drawn around the model's predictions: per story x access x observe, ``trials_per_cell`` trials whose
    bets are Dirichlet(concentration x predicted); returns per-trial rows (story, access, observe, bet_0..bet_3)."""
    utilities = _Utilities.of(priors)
    bets = bet_distribution(np.array([alpha]), np.array([lapse]), utilities, access_blind)[0]
    rows = []
    for i in range(len(priors)):
        for a in ACCESS:
            for w in range(a + 1):
                for _ in range(trials_per_cell):
                    rows.append([i, a, w, *rng.dirichlet(concentration * bets[i, a - 1, w] + 1e-3)])
    return np.array(rows)
