"""Yoon, Tessler, Goodman & Frank (2020)'s polite speaker, from the paper's equations, and its maximum-likelihood fit.

The model (Open Mind 4: 71-87, section "Model" and its Supplementary Materials):

- States s = 0..3 hearts with a uniform prior P(s) (the listener does not know the quality);
  values V(s) = s + 1 (the paper: the subjective value is the rating itself; only differences matter).
- Utterances w: "It was / It wasn't" x terrible, bad, good, amazing (8). Cost C(w) = c for a negated
  utterance (one word longer: the paper's cost is the length in words scaled by c), 0 otherwise.
- Literal semantics L(w, s): the norming judgements (the paper's own, shipped in ``steps/data``; or another
  file in that format) at their Beta(1, 1) posterior mean (k + 1) / (n + 2) per utterance and state.
- Literal listener      L0(s | w) ∝ L(w, s) P(s).
- First-order speaker   S1(w | s, φ) ∝ exp(α [φ ln L0(s | w) + (1 − φ) E_L0(s'|w)[V(s')] − C(w)]).
- Pragmatic listener    L1(s, φ | w) ∝ S1(w | s, φ) P(s) P(φ), P(φ) uniform on (0, 1), on a grid of
  :data:`N_PHI` midpoints.
- Second-order speaker  S2(w | s, ω, φ̂) ∝ exp(α [ω_inf ln L1(s | w) + ω_soc E_L1(s'|w)[V(s')]
  + ω_pres ln L1(φ̂ | w) − C(w)]), where ln L1(φ̂ | w) is the log density of the listener's posterior over
  the speaker's goal weight at the projected weight φ̂ (linear between grid points).
- Parameters: per goal condition (informational, social, both) the weights ω = (ω_inf, ω_soc, ω_pres) on
  the simplex and the projected weight φ̂; shared: speaker optimality α (S1 and S2, as in the paper) and
  negation cost c.

Fit (:func:`fit_polite`): maximum likelihood of counts n[goal, state, utterance], which may be expected counts
(summed probabilities: the cross-entropy of a model's Experiment 2 distributions). L-BFGS-B over unconstrained
parameters (log α; ω as the softmax of two logits and a 0; logit φ̂; c within [0, 10]), gradients by central
differences evaluated in one vectorised batch, :data:`DEFAULT_STARTS` starts drawn from a seeded generator:
the same counts and seed give the same fit. Intervals: percentile bootstrap over units (participants or items),
each resample refitted from the maximum-likelihood estimate.

Stated differences from the paper: the paper infers the semantics jointly with the production data
(Beta-Binomial link) and reports Bayesian posterior estimates (priors α ~ U(0, 20), c ~ U(1, 10), ω ~ Dir(1, 1, 1),
φ̂ ~ U(0, 1)); here the semantics are fixed at their posterior mean and the parameters are maximum-likelihood
estimates within :data:`ALPHA_BOUNDS` and :data:`COST_BOUNDS`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import optimize

from schemas.probabilities import ASSESSMENTS
from steps.errors import InputValidationError
from steps.inputs import cell_problem, missing_column_message, open_csv

GOALS = ("informational", "social", "both")
STATES = (0, 1, 2, 3)
UTTERANCES = tuple(f"It {frame} {a}" for frame in ("was", "wasn't") for a in ASSESSMENTS)
NEGATED = np.array([u.startswith("It wasn't") for u in UTTERANCES], float)
VALUES = np.array(STATES, float) + 1.0
N_PHI = 40
PHI_GRID = (np.arange(N_PHI) + 0.5) / N_PHI
ALPHA_BOUNDS = (0.05, 40.0)
COST_BOUNDS = (0.0, 10.0)
_LOGIT_BOUND = 10.0  # omega logits
_PHI_LOGIT_BOUND = float(np.log(0.995 / 0.005))  # phi in [0.005, 0.995]
DEFAULT_STARTS = 8
DEFAULT_RESAMPLES = 200
SHIPPED_SEMANTICS = Path(__file__).parent / "data" / "yoon2020_literal_semantics.csv"
SHIPPED_SEMANTICS_CITATION = ("Yoon, Tessler, Goodman & Frank (2020), Open Mind 4:71-87, literal semantics norming "
                              "(github.com/ejyoon/polite_speaker 02_analysis/01_data/literal_semantics.csv, commit 8813932)")
PARAMETER_NAMES = ("omega_inf", "omega_soc", "omega_pres", "phi")  # per goal
GLOBAL_NAMES = ("alpha", "negation_cost")
N_THETA = 2 + 3 * len(GOALS)


# ---------------------------------------------------------------- literal semantics


@dataclass(frozen=True)
class LiteralSemantics:
    """Norming judgements per utterance x state: ``true`` of ``judged`` said true; ``accept`` is (k + 1) / (n + 2)."""

    true: np.ndarray  # (8 utterances, 4 states)
    judged: np.ndarray
    source: str
    sha256: str

    @property
    def accept(self) -> np.ndarray:
        """L(w, s): the Beta(1, 1) posterior mean of the probability that w is judged true of s."""
        return (self.true + 1.0) / (self.judged + 2.0)


_POSITIVITY = {"it was ___": "was", "it wasn't ___": "wasn't", "was": "was", "wasn't": "wasn't", "it was": "was",
               "it wasn't": "wasn't", "no_neg": "was", "neg": "wasn't"}
_JUDGMENT = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
SEMANTICS_COLUMNS = ("state", "positivity", "utterance", "judgment")


def load_literal_semantics(path: Optional[str | Path] = None, s3_endpoint: Optional[str] = None) -> LiteralSemantics:
    """Read a norming file (one row per judgement: ``state, positivity, utterance, judgment``; the shipped file
    when ``path`` is None). InputValidationError naming file, row and column for every problem."""
    file = open_csv(path or SHIPPED_SEMANTICS, "utf-8", s3_endpoint)
    header = file.header
    problems = [missing_column_message(c, header) for c in SEMANTICS_COLUMNS if c not in header]
    if problems:
        raise InputValidationError(file.path, problems)
    at = {c: header.index(c) for c in SEMANTICS_COLUMNS}
    true, judged = np.zeros((8, 4)), np.zeros((8, 4))
    for row_no, line, cells in file.records():
        if len(cells) != len(header):
            problems.append(f"row {row_no} (line {line}): has {len(cells)} fields, expected {len(header)} as in the header")
            continue
        value = {c: cells[i].strip().lower() for c, i in at.items()}
        bad = []
        if value["state"] not in ("0", "1", "2", "3"):
            bad.append(cell_problem(row_no, line, "state", f"must be 0, 1, 2 or 3 (hearts) (got {cells[at['state']]!r})"))
        if value["positivity"] not in _POSITIVITY:
            bad.append(cell_problem(row_no, line, "positivity", f"must be \"it was ___\" or \"it wasn't ___\" (got {cells[at['positivity']]!r})"))
        if value["utterance"] not in ASSESSMENTS:
            bad.append(cell_problem(row_no, line, "utterance", f"must be one of {', '.join(ASSESSMENTS)} (got {cells[at['utterance']]!r})"))
        if value["judgment"] not in _JUDGMENT:
            bad.append(cell_problem(row_no, line, "judgment", f"must be 1 (true) or 0 (false) (got {cells[at['judgment']]!r})"))
        if bad:
            problems += bad
            continue
        w = UTTERANCES.index(f"It {_POSITIVITY[value['positivity']]} {value['utterance']}")
        s = int(value["state"])
        judged[w, s] += 1
        true[w, s] += _JUDGMENT[value["judgment"]]
    if not problems:
        problems += [f"no judgement of {UTTERANCES[w]!r} in state {s}: every utterance needs judgements in every state"
                     for w in range(8) for s in STATES if judged[w, s] == 0]
    if problems:
        raise InputValidationError(file.path, problems)
    return LiteralSemantics(true, judged, file.path, file.sha256)


# ---------------------------------------------------------------- the model, vectorised over parameter vectors


@dataclass(frozen=True)
class PoliteParameters:
    """One parameter setting: ``omega`` (3 goals x [inf, soc, pres]), ``phi`` (3 goals), ``alpha``, ``cost``."""

    alpha: float
    cost: float
    omega: np.ndarray
    phi: np.ndarray

    def theta(self) -> np.ndarray:
        """The unconstrained vector the optimiser works on (log alpha, cost, per goal: 2 omega logits, logit phi)."""
        omega = np.clip(np.asarray(self.omega, float), 1e-9, None)
        logits = np.log(omega[:, :2]) - np.log(omega[:, 2:3])
        phi = np.clip(np.asarray(self.phi, float), 1e-6, 1 - 1e-6)
        per_goal = np.column_stack([logits, np.log(phi / (1 - phi))])
        return np.concatenate([[np.log(self.alpha), self.cost], per_goal.ravel()])

    @classmethod
    def from_theta(cls, theta: np.ndarray) -> "PoliteParameters":
        """The parameters of one unconstrained vector."""
        alpha, cost, omega, phi = _unpack(np.asarray(theta, float)[None, :])
        return cls(float(alpha[0]), float(cost[0]), omega[0], phi[0])

    def named(self) -> dict[tuple[Optional[str], str], float]:
        """(goal or None, parameter name) -> value."""
        out: dict[tuple[Optional[str], str], float] = {(None, "alpha"): self.alpha, (None, "negation_cost"): self.cost}
        for g, goal in enumerate(GOALS):
            for k, name in enumerate(PARAMETER_NAMES[:3]):
                out[(goal, name)] = float(self.omega[g, k])
            out[(goal, "phi")] = float(self.phi[g])
        return out


def _unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    alpha = np.exp(theta[:, 0])
    cost = theta[:, 1]
    per_goal = theta[:, 2:].reshape(len(theta), len(GOALS), 3)
    logits = np.concatenate([per_goal[..., :2], np.zeros(per_goal.shape[:2] + (1,))], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    omega = np.exp(logits)
    omega /= omega.sum(axis=-1, keepdims=True)
    phi = 1.0 / (1.0 + np.exp(-per_goal[..., 2]))
    return alpha, cost, omega, phi


def _logsumexp(x: np.ndarray, axis) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.sum(np.exp(x - top), axis=axis))


@dataclass(frozen=True)
class _Literal:
    """What the literal level contributes, fixed for a semantics: S1's utility before cost, per (phi, s, w)."""

    base: np.ndarray  # (N_PHI, 4, 8)

    @classmethod
    def of(cls, semantics: LiteralSemantics) -> "_Literal":
        accept = semantics.accept  # (8, 4)
        l0 = accept / accept.sum(axis=1, keepdims=True)  # uniform P(s)
        log_l0 = np.log(l0).T  # (4 s, 8 w)
        social = l0 @ VALUES  # (8,)
        base = PHI_GRID[:, None, None] * log_l0[None] + (1 - PHI_GRID)[:, None, None] * social[None, None, :]
        return cls(base)


def log_speaker2(theta: np.ndarray, literal: _Literal) -> np.ndarray:
    """log S2(w | s, goal) for a batch of unconstrained parameter vectors: (B, 11) -> (B, 3 goals, 4 states, 8 utterances)."""
    alpha, cost, omega, phi = _unpack(theta)
    b = len(theta)
    # S1(w | s, phi): (B, PHI, s, w)
    util1 = literal.base[None] - cost[:, None, None, None] * NEGATED
    scaled = alpha[:, None, None, None] * util1
    log_s1 = scaled - _logsumexp(scaled, axis=3)[..., None]
    # L1(s, phi | w) with uniform P(s), P(phi): normalise over (phi, s) for each w
    log_z = _logsumexp(log_s1.reshape(b, N_PHI * 4, 8), axis=1)  # (B, w)
    log_l1_s = _logsumexp(log_s1, axis=1) - log_z[:, None, :]  # (B, s, w)
    log_l1_phi = _logsumexp(log_s1, axis=2) - log_z[:, None, :] + np.log(N_PHI)  # (B, phi, w): log density
    social = np.einsum("bsw,s->bw", np.exp(log_l1_s), VALUES)
    # ln L1(phi_hat | w), linear in the grid
    t = phi * N_PHI - 0.5
    j0 = np.clip(np.floor(t), 0, N_PHI - 2).astype(int)  # (B, g)
    frac = np.clip(t - j0, 0.0, 1.0)[..., None]
    low = np.take_along_axis(log_l1_phi, j0[..., None], axis=1)  # (B, g, w)
    high = np.take_along_axis(log_l1_phi, j0[..., None] + 1, axis=1)
    presentational = (1 - frac) * low + frac * high
    util2 = (omega[:, :, 0, None, None] * log_l1_s[:, None, :, :] + omega[:, :, 1, None, None] * social[:, None, None, :]
             + omega[:, :, 2, None, None] * presentational[:, :, None, :] - cost[:, None, None, None] * NEGATED)
    scaled2 = alpha[:, None, None, None] * util2
    return scaled2 - _logsumexp(scaled2, axis=3)[..., None]


def speaker_distribution(params: PoliteParameters, semantics: LiteralSemantics) -> np.ndarray:
    """S2(w | s, goal) as probabilities: (3 goals, 4 states, 8 utterances)."""
    return np.exp(log_speaker2(params.theta()[None, :], _Literal.of(semantics))[0])


# ---------------------------------------------------------------- maximum likelihood


@dataclass
class PoliteFit:
    """A fitted polite speaker for one source: the estimate, its fit to the data, and bootstrap draws."""

    params: PoliteParameters
    log_likelihood: float
    observations: float
    observed: np.ndarray  # (3, 4, 8) proportions (NaN where a cell has no data)
    predicted: np.ndarray  # (3, 4, 8)
    goals_with_data: tuple[bool, ...]
    correlation: float
    seconds: float
    seed: int
    starts: int
    units: int = 0
    bootstrap: Optional[np.ndarray] = None  # (resamples, len(estimate_names()))
    bootstrap_failed: int = 0
    notes: list[str] = field(default_factory=list)

    def estimates(self) -> dict[tuple[Optional[str], str], float]:
        """(goal or None, name) -> estimate, NaN for the parameters of a goal without data; plus the correlation."""
        named = self.params.named()
        for goal, present in zip(GOALS, self.goals_with_data):
            if not present:
                named.update({(goal, n): float("nan") for n in PARAMETER_NAMES})
        named[(None, "correlation")] = self.correlation
        return named


def estimate_names() -> list[tuple[Optional[str], str]]:
    """The order of :meth:`PoliteFit.estimates` (and of the bootstrap columns)."""
    names: list[tuple[Optional[str], str]] = [(None, n) for n in GLOBAL_NAMES]
    names += [(g, n) for g in GOALS for n in PARAMETER_NAMES]
    return names + [(None, "correlation")]


_BOUNDS = [(np.log(ALPHA_BOUNDS[0]), np.log(ALPHA_BOUNDS[1])), COST_BOUNDS] + [
    (-_LOGIT_BOUND, _LOGIT_BOUND), (-_LOGIT_BOUND, _LOGIT_BOUND), (-_PHI_LOGIT_BOUND, _PHI_LOGIT_BOUND)] * len(GOALS)
_STEP = 1e-5


class _Objective:
    """Mean negative log-likelihood per observation and its central-difference gradient, in one batched evaluation."""

    def __init__(self, counts: np.ndarray, literal: _Literal):
        total = counts.sum()
        if total <= 0:
            raise ValueError("no observations to fit")
        self.counts = counts / total
        self.literal = literal
        offsets = np.vstack([np.zeros(N_THETA), np.eye(N_THETA) * _STEP, -np.eye(N_THETA) * _STEP])
        self.offsets = offsets

    def values(self, thetas: np.ndarray) -> np.ndarray:
        """Mean negative log-likelihood for each row of ``thetas``."""
        log_p = log_speaker2(thetas, self.literal)
        return -np.einsum("bgsw,gsw->b", log_p, self.counts)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        values = self.values(theta[None, :] + self.offsets)
        grad = (values[1:N_THETA + 1] - values[N_THETA + 1:]) / (2 * _STEP)
        return float(values[0]), grad


def _starts(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    neutral = PoliteParameters(3.0, 1.0, np.full((3, 3), 1 / 3), np.full(3, 0.5)).theta()
    starts = [neutral]
    for _ in range(count - 1):
        theta = np.concatenate([[rng.uniform(np.log(0.5), np.log(20.0)), rng.uniform(0.0, 3.0)],
                                np.column_stack([rng.normal(0, 1.5, size=(3, 2)), rng.uniform(-3, 3, size=3)]).ravel()])
        starts.append(theta)
    return starts


def _minimise(objective: _Objective, start: np.ndarray) -> optimize.OptimizeResult:
    return optimize.minimize(objective, np.clip(start, [b[0] for b in _BOUNDS], [b[1] for b in _BOUNDS]), jac=True,
                             method="L-BFGS-B", bounds=_BOUNDS, options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-7})


def _best_fit(counts: np.ndarray, literal: _Literal, starts: list[np.ndarray]) -> optimize.OptimizeResult:
    objective = _Objective(counts, literal)
    results = [_minimise(objective, s) for s in starts]
    return min(results, key=lambda r: r.fun)


def _proportions(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def cell_correlation(counts: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r between observed proportions and predictions over goal x state x utterance (cells with data only)."""
    observed = _proportions(counts)
    keep = ~np.isnan(observed)
    x, y = observed[keep], predicted[keep]
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def fit_polite(counts: np.ndarray, semantics: LiteralSemantics, seed: int = 0, starts: int = DEFAULT_STARTS,
               unit_counts: Optional[np.ndarray] = None, resamples: int = DEFAULT_RESAMPLES) -> PoliteFit:
    """Maximum-likelihood fit to ``counts`` (3 goals x 4 states x 8 utterances; expected counts allowed).

    ``unit_counts`` (units x 3 x 4 x 8, summing to ``counts``) enables the bootstrap: ``resamples`` resamples of
    whole units, each refitted from the estimate. Deterministic given ``seed``.
    """
    counts = np.asarray(counts, float)
    if counts.shape != (len(GOALS), 4, 8) or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"counts must be a non-negative (3, 4, 8) array, got shape {counts.shape}")
    started = time.perf_counter()
    literal = _Literal.of(semantics)
    rng = np.random.default_rng(seed)
    best = _best_fit(counts, literal, _starts(rng, starts))
    params = PoliteParameters.from_theta(best.x)
    predicted = np.exp(log_speaker2(best.x[None, :], literal)[0])
    total = float(counts.sum())
    fit = PoliteFit(params, -best.fun * total, total, _proportions(counts), predicted,
                    tuple(bool(counts[g].sum() > 0) for g in range(len(GOALS))), cell_correlation(counts, predicted),
                    0.0, seed, starts)
    if not best.success:
        fit.notes.append(f"optimiser: {best.message}")
    fit.notes += _at_bounds(params)
    if unit_counts is not None and resamples > 0 and len(unit_counts) >= 2:
        fit.units = len(unit_counts)
        fit.bootstrap, fit.bootstrap_failed = _bootstrap(unit_counts, literal, best.x, rng, resamples)
    elif unit_counts is not None:
        fit.units = len(unit_counts)
    fit.seconds = time.perf_counter() - started
    return fit


def _at_bounds(params: PoliteParameters) -> list[str]:
    notes = []
    if params.alpha >= ALPHA_BOUNDS[1] * 0.999:
        notes.append(f"alpha at its upper bound {ALPHA_BOUNDS[1]:g} (near-deterministic choices)")
    if params.cost >= COST_BOUNDS[1] * 0.999:
        notes.append(f"negation cost at its upper bound {COST_BOUNDS[1]:g}")
    return notes


def _bootstrap(unit_counts: np.ndarray, literal: _Literal, theta: np.ndarray, rng: np.random.Generator,
               resamples: int) -> tuple[np.ndarray, int]:
    units = len(unit_counts)
    flat = np.asarray(unit_counts, float).reshape(units, -1)
    weights = rng.multinomial(units, np.full(units, 1 / units), size=resamples)
    draws, failed = [], 0
    for w in weights:
        counts = (w @ flat).reshape(len(GOALS), 4, 8)
        if counts.sum() <= 0:
            failed += 1
            continue
        result = _minimise(_Objective(counts, literal), theta)
        params = PoliteParameters.from_theta(result.x)
        predicted = np.exp(log_speaker2(result.x[None, :], literal)[0])
        named = params.named()
        named[(None, "correlation")] = cell_correlation(counts, predicted)
        for g, goal in enumerate(GOALS):
            if counts[g].sum() <= 0:
                named.update({(goal, n): float("nan") for n in PARAMETER_NAMES})
        draws.append([named[k] for k in estimate_names()])
    return np.array(draws).reshape(len(draws), len(estimate_names())), failed


def simulate_counts(params: PoliteParameters, semantics: LiteralSemantics, trials_per_cell: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Choices drawn from the model: (trials_per_cell draws per goal x state) -> counts (3, 4, 8)."""
    p = speaker_distribution(params, semantics)
    return np.array([[rng.multinomial(trials_per_cell, p[g, s] / p[g, s].sum()) for s in STATES] for g in range(len(GOALS))],
                    float)
