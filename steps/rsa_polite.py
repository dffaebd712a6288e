"""Yoon, Tessler, Goodman & Frank (2020)'s polite speaker, from the paper's equations, and its maximum-likelihood fit.

The model (Open Mind 4: 71-87, section "Model" and its Supplementary Materials):

- States s = 0..3 hearts with a uniform prior P(s) (the listener does not know the quality);
  values V(s) = s + 1 (the paper: the subjective value is the rating itself; only differences matter).
- Utterances w: "It was / It wasn't" x terrible, bad, good, amazing (8). Cost C(w) = c for a negated
  utterance (one word longer: the paper's cost is the length in words scaled by c), 0 otherwise.
- Literal semantics θ(w, s): the probability that w is true of s. The paper infers it jointly with the
  production data, constrained by its norming judgements through a binomial link; so does ``semantics="joint"``
  (the default). ``"fixed"`` holds it at the norming data's Beta(1, 1) posterior mean (k + 1) / (n + 2).
  The norming data: the paper's own (shipped in ``steps/data``) or another file in that format.
- Literal listener      L0(s | w) ∝ θ(w, s) P(s).
- First-order speaker   S1(w | s, φ) ∝ exp(α [φ ln L0(s | w) + (1 − φ) E_L0(s'|w)[V(s')] − C(w)]).
- Pragmatic listener    L1(s, φ | w) ∝ S1(w | s, φ) P(s) P(φ), P(φ) uniform on (0, 1), on a grid of
  :data:`N_PHI` midpoints.
- Second-order speaker  S2(w | s, ω, φ̂) ∝ exp(α [ω_inf ln L1(s | w) + ω_soc E_L1(s'|w)[V(s')]
  + ω_pres ln L1(φ̂ | w) − C(w)]), where ln L1(φ̂ | w) is the log density of the listener's posterior over
  the speaker's goal weight at the projected weight φ̂ (linear between grid points).
- Parameters: per goal condition (informational, social, both) the weights ω = (ω_inf, ω_soc, ω_pres) on
  the simplex and the projected weight φ̂; shared: speaker optimality α (S1 and S2, as in the paper) and
  negation cost c; with joint semantics also θ (32 values).

Fit (:func:`fit_polite`): maximum likelihood of counts n[goal, state, utterance], which may be expected counts
(summed probabilities: the cross-entropy of a model's Experiment 2 distributions), plus, for joint semantics, the
binomial likelihood of the norming judgements (with the paper's uniform prior on θ: k + 1 of n + 2). Parameters are
optimised on an unconstrained scale within bounds (log α; ω as the softmax of two logits and a 0; logit φ̂; logit θ;
c in [0, 10]) by L-BFGS-B (BLAS on one thread) with the exact gradient (reverse mode, written out in
:meth:`_Problem.batch`, vectorised over data rows). Each of :data:`DEFAULT_STARTS` starts (neutral, the paper's
estimates, then random ones from a seeded generator) runs 150 iterations; the best 3 run to convergence. The same counts
and seed give the same fit. Intervals: percentile bootstrap, resampling the source's units (participants or items)
and, for joint semantics, the norming participants; each resample is re-estimated from the estimate, by default with
up to 12 projected Newton steps using the estimate's Hessian, every resample at once (a k-step bootstrap), or
optionally refitted to convergence.

Stated differences from the paper: it reports Bayesian posterior estimates (priors α ~ U(0, 20), c ~ U(1, 10),
ω ~ Dir(1, 1, 1), φ̂ ~ U(0, 1), θ with the norming posterior), here they are maximum-likelihood estimates within
:data:`ALPHA_BOUNDS` and :data:`COST_BOUNDS`; the paper's equation (2) scales the cost by α like the utilities, as
here (its WebPPL code puts the cost in an utterance prior instead, a reparameterisation: c_code − 1 = α c).
"""

from __future__ import annotations

import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from scipy import optimize
from threadpoolctl import threadpool_limits

from schemas.fits import DEFAULT_RESAMPLES, DEFAULT_STARTS, SemanticsMode
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
SEMANTICS_MODES: tuple[str, ...] = typing.get_args(SemanticsMode)
SHIPPED_SEMANTICS = Path(__file__).parent / "data" / "yoon2020_literal_semantics.csv"
SHIPPED_SEMANTICS_CITATION = ("Yoon, Tessler, Goodman & Frank (2020), Open Mind 4:71-87, literal semantics norming "
                              "(github.com/ejyoon/polite_speaker 02_analysis/01_data/literal_semantics.csv, commit 8813932)")
PARAMETER_NAMES = ("omega_inf", "omega_soc", "omega_pres", "phi", "informational_emphasis")  # per goal
GLOBAL_NAMES = ("alpha", "negation_cost")
N_SPEAKER = 2 + 3 * len(GOALS)  # log alpha, cost, per goal: 2 omega logits and logit phi
N_SEMANTICS = len(UTTERANCES) * len(STATES)
_TINY = 1e-300  # floor of probabilities before a log (an S1 choice can underflow at large alpha)
_MIN_EXPONENT = -700.0  # exp() arguments are floored here: subnormal results are ~100x slower and carry no information
_OMEGA_LOGIT = 10.0
_PHI_LOGIT = float(np.log(0.995 / 0.005))  # phi in [0.005, 0.995]
_THETA_LOGIT = 9.0  # theta in [1.2e-4, 0.99988]
_SPEAKER_BOUNDS = [(float(np.log(ALPHA_BOUNDS[0])), float(np.log(ALPHA_BOUNDS[1]))), COST_BOUNDS] + [
    (-_OMEGA_LOGIT, _OMEGA_LOGIT), (-_OMEGA_LOGIT, _OMEGA_LOGIT), (-_PHI_LOGIT, _PHI_LOGIT)] * len(GOALS)
_FTOL = 1e-11
_SCREEN_ITERATIONS = 150  # every start runs this far; the best _COMPLETED run to convergence
_COMPLETED = 3
_NEWTON_STEPS = 12
_EIGEN_FLOOR = 1e-6
BOOTSTRAP_METHODS = {
    # Measured against full refits (tests/test_rsa_fits.py): weights within 0.004 with 12 items x 20 observations per cell and
    # on the paper's human data; within 0.06 with 200 participants x 1 trial per cell where a goal's phi is weakly determined
    # (along such flat directions the k-step draws spread less than full refits would): use "refit" there.
    "newton": "k-step bootstrap: up to 12 projected Newton steps from the estimate with its Hessian (Andrews 2002)",
    "refit": "each resample refitted to convergence from the estimate (L-BFGS-B)",
}
# Yoon et al. (2020), Table 1, full model on the human data: goal -> (omega_inf, omega_soc, omega_pres, phi)
PAPER_WEIGHTS = {"informational": (0.36, 0.02, 0.62, 0.49), "social": (0.25, 0.31, 0.44, 0.37), "both": (0.36, 0.11, 0.54, 0.36)}


# ---------------------------------------------------------------- literal semantics (norming judgements)


@dataclass(frozen=True)
class LiteralSemantics:
    """Norming judgements per utterance x state: ``true`` of ``judged`` said true, in total and per participant."""

    true: np.ndarray  # (8 utterances, 4 states)
    judged: np.ndarray
    source: str
    sha256: str
    participant_true: Optional[np.ndarray] = None  # (participants, 8, 4), when the file names participants
    participant_judged: Optional[np.ndarray] = None

    @property
    def accept(self) -> np.ndarray:
        """The Beta(1, 1) posterior mean (k + 1) / (n + 2) of the probability that w is judged true of s: (8, 4)."""
        return (self.true + 1.0) / (self.judged + 2.0)


_POSITIVITY = {"it was ___": "was", "it wasn't ___": "wasn't", "was": "was", "wasn't": "wasn't", "it was": "was",
               "it wasn't": "wasn't", "no_neg": "was", "neg": "wasn't"}
_JUDGMENT = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
SEMANTICS_COLUMNS = ("state", "positivity", "utterance", "judgment")


def load_literal_semantics(path: Optional[str | Path] = None, s3_endpoint: Optional[str] = None) -> LiteralSemantics:
    """Read a norming file (one row per judgement: ``state, positivity, utterance, judgment``, optional ``subid``; the
    shipped file when ``path`` is None). InputValidationError naming file, row and column for every problem."""
    file = open_csv(path or SHIPPED_SEMANTICS, "utf-8", s3_endpoint)
    header = file.header
    problems = [missing_column_message(c, header) for c in SEMANTICS_COLUMNS if c not in header]
    if problems:
        raise InputValidationError(file.path, problems)
    at = {c: header.index(c) for c in SEMANTICS_COLUMNS}
    subid = header.index("subid") if "subid" in header else None
    judgements: list[tuple[str, int, int, int]] = []
    for row_no, line, cells in file.records():
        if len(cells) != len(header):
            problems.append(f"row {row_no} (line {line}): has {len(cells)} fields, expected {len(header)} as in the header")
            continue
        value = {c: cells[i].strip().lower() for c, i in at.items()}
        bad = []
        if value["state"] not in ("0", "1", "2", "3"):
            bad.append(cell_problem(row_no, line, "state", f"must be 0, 1, 2 or 3 (hearts) (got {cells[at['state']]!r})"))
        if value["positivity"] not in _POSITIVITY:
            bad.append(cell_problem(row_no, line, "positivity",
                                    f"must be \"it was ___\" or \"it wasn't ___\" (got {cells[at['positivity']]!r})"))
        if value["utterance"] not in ASSESSMENTS:
            bad.append(cell_problem(row_no, line, "utterance", f"must be one of {', '.join(ASSESSMENTS)} (got {cells[at['utterance']]!r})"))
        if value["judgment"] not in _JUDGMENT:
            bad.append(cell_problem(row_no, line, "judgment", f"must be 1 (true) or 0 (false) (got {cells[at['judgment']]!r})"))
        if bad:
            problems += bad
            continue
        w = UTTERANCES.index(f"It {_POSITIVITY[value['positivity']]} {value['utterance']}")
        judgements.append((cells[subid].strip() if subid is not None else "", w, int(value["state"]), _JUDGMENT[value["judgment"]]))
    if not problems and not judgements:
        problems.append("the file has a header but no judgements")
    participants = sorted({j[0] for j in judgements})
    per_true = np.zeros((len(participants), 8, 4))
    per_judged = np.zeros((len(participants), 8, 4))
    index = {p: i for i, p in enumerate(participants)}
    for person, w, s, judgment in judgements:
        per_judged[index[person], w, s] += 1
        per_true[index[person], w, s] += judgment
    judged = per_judged.sum(axis=0)
    if not problems:
        problems += [f"no judgement of {UTTERANCES[w]!r} in state {s}: every utterance needs judgements in every state"
                     for w in range(8) for s in STATES if judged[w, s] == 0]
    if problems:
        raise InputValidationError(file.path, problems)
    named = subid is not None and len(participants) >= 2
    source = file.path if path else f"the paper's norming data, shipped: {SHIPPED_SEMANTICS_CITATION}"
    return LiteralSemantics(per_true.sum(axis=0), judged, source, file.sha256, per_true if named else None,
                            per_judged if named else None)


# ---------------------------------------------------------------- parameters


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class PoliteParameters:
    """One parameter setting: ``omega`` (3 goals x [inf, soc, pres]), ``phi`` (3 goals), ``alpha``, ``cost`` and the
    literal semantics ``theta`` (8 utterances x 4 states)."""

    alpha: float
    cost: float
    omega: np.ndarray
    phi: np.ndarray
    theta: np.ndarray

    def vector(self) -> np.ndarray:
        """The unconstrained vector the optimiser works on: speaker part, then logit theta."""
        omega = np.clip(np.asarray(self.omega, float), 1e-9, None)
        logits = np.log(omega[:, :2]) - np.log(omega[:, 2:3])
        phi = np.clip(np.asarray(self.phi, float), 1e-6, 1 - 1e-6)
        speaker = np.concatenate([[np.log(self.alpha), self.cost], np.column_stack([logits, _logit(phi)]).ravel()])
        return np.concatenate([speaker, _logit(np.clip(np.asarray(self.theta, float), 1e-9, 1 - 1e-9)).ravel()])

    @classmethod
    def from_vector(cls, x: np.ndarray) -> "PoliteParameters":
        """The parameters of one unconstrained vector (speaker part and logit theta)."""
        alpha, cost, omega, phi, _ = _speaker_part(x)
        return cls(alpha, cost, omega, phi, _sigmoid(np.asarray(x[N_SPEAKER:], float).reshape(8, 4)))

    def named(self) -> dict[tuple[Optional[str], str], float]:
        """(goal or None, parameter name) -> value."""
        out: dict[tuple[Optional[str], str], float] = {(None, "alpha"): self.alpha, (None, "negation_cost"): self.cost}
        for g, goal in enumerate(GOALS):
            for k, name in enumerate(PARAMETER_NAMES[:3]):
                out[(goal, name)] = float(self.omega[g, k])
            out[(goal, "phi")] = float(self.phi[g])
            out[(goal, "informational_emphasis")] = informational_emphasis(self.omega[g], float(self.phi[g]))
        return out


def informational_emphasis(omega: np.ndarray, phi: float) -> float:
    """ω_inf + ω_pres φ̂: the share of a goal's weight on being or appearing informative (1 minus it: being or appearing kind).

    A summary of the paper's weights: its Table 1 gives informational .66, both .55, social .41.
    """
    return float(omega[0] + omega[2] * phi)


def _speaker_part(x: np.ndarray) -> tuple[float, float, np.ndarray, np.ndarray, np.ndarray]:
    """alpha, cost, omega (3, 3), phi (3,), and the per-goal raw block (3, 3) of a vector."""
    per_goal = np.asarray(x[2:N_SPEAKER], float).reshape(len(GOALS), 3)
    logits = np.column_stack([per_goal[:, :2], np.zeros(len(GOALS))])
    logits -= logits.max(axis=1, keepdims=True)
    omega = np.exp(logits)
    omega /= omega.sum(axis=1, keepdims=True)
    return float(np.exp(x[0])), float(x[1]), omega, _sigmoid(per_goal[:, 2]), per_goal


# ---------------------------------------------------------------- the model, its likelihood and exact gradient


class _Problem:
    """Negative log-likelihood (per production observation) of production ``counts`` and, with joint semantics, of the
    norming judgements, with its exact gradient. Vectorised over data rows: ``counts`` may be (rows, 3, 4, 8) and
    ``norming`` (rows, 8, 4) each; :meth:`batch` evaluates one parameter vector per data row in one pass."""

    def __init__(self, counts: np.ndarray, semantics: LiteralSemantics, joint: bool,
                 norming: Optional[tuple[np.ndarray, np.ndarray]] = None):
        counts = np.asarray(counts, float)
        rows = counts if counts.ndim == 4 else counts[None]
        totals = rows.sum(axis=(1, 2, 3))
        if np.any(totals <= 0):
            raise ValueError("no observations to fit")
        self.total = totals
        self.counts = rows / totals[:, None, None, None]
        self.joint = joint
        true, judged = norming if norming is not None else (semantics.true, semantics.judged)
        # the paper's uniform prior on theta, on the logit scale: k + 1 of n + 2
        self.k = np.broadcast_to(np.asarray(true, float) + 1.0, (len(rows), 8, 4)) / totals[:, None, None]
        self.n = np.broadcast_to(np.asarray(judged, float) + 2.0, (len(rows), 8, 4)) / totals[:, None, None]
        self.fixed_eta = _logit(semantics.accept)
        self.bounds = _SPEAKER_BOUNDS + ([(-_THETA_LOGIT, _THETA_LOGIT)] * N_SEMANTICS if joint else [])

    def full(self, x: np.ndarray) -> np.ndarray:
        """The full vector(s) (speaker part and logit theta) of optimiser vector(s)."""
        x = np.asarray(x, float)
        if self.joint:
            return x
        eta = np.broadcast_to(self.fixed_eta.ravel(), x.shape[:-1] + (N_SEMANTICS,))
        return np.concatenate([x, eta], axis=-1)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and gradient at one vector (a one-row problem)."""
        values, grads, _ = self.batch(np.asarray(x, float)[None, :])
        assert grads is not None
        return float(values[0]), grads[0]

    def batch(self, xs: np.ndarray, rows: Optional[np.ndarray] = None,
              gradient: bool = True) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        """(objectives, gradients or None, log S2) of vectors ``xs`` (B, n), row b on data row ``rows[b]`` (default: b)."""
        rows = np.arange(len(xs)) if rows is None else np.asarray(rows)
        counts, k, n = self.counts[rows], self.k[rows], self.n[rows]
        full = self.full(xs)
        size = len(full)
        alpha, cost = np.exp(full[:, 0]), full[:, 1]
        per_goal = full[:, 2:N_SPEAKER].reshape(size, len(GOALS), 3)
        logits = np.concatenate([per_goal[..., :2], np.zeros((size, len(GOALS), 1))], axis=2)
        omega = np.exp(logits - logits.max(axis=2, keepdims=True))
        omega /= omega.sum(axis=2, keepdims=True)
        phi = _sigmoid(per_goal[..., 2])
        theta = _sigmoid(full[:, N_SPEAKER:].reshape(size, 8, 4))
        a4, c4 = alpha[:, None, None, None], cost[:, None, None, None]
        # literal listener
        total_theta = theta.sum(axis=2)
        l0 = theta / total_theta[..., None]
        log_l0_t = (np.log(theta) - np.log(total_theta)[..., None]).transpose(0, 2, 1)  # (B, s, w)
        social0 = l0 @ VALUES  # (B, w)
        # S1 on the phi grid (B, phi, s, w) and at each goal's projected phi_hat (B, g, s, w)
        util1 = (PHI_GRID[None, :, None, None] * log_l0_t[:, None] + (1 - PHI_GRID)[None, :, None, None] * social0[:, None, None, :]
                 - c4 * NEGATED)
        s1 = _softmax(a4 * util1)
        util1_hat = phi[..., None, None] * log_l0_t[:, None] + (1 - phi)[..., None, None] * social0[:, None, None, :] - c4 * NEGATED
        s1_hat = _softmax(a4 * util1_hat)
        # L1(s, phi | w) ∝ S1: its state marginal, and its density at phi_hat (the grid integrates the normaliser)
        by_state = s1.sum(axis=1)  # (B, s, w)
        z = by_state.sum(axis=1)  # (B, w) = N_PHI x the integral over phi
        l1_s = by_state / z[:, None, :]
        log_l1_s = np.log(np.maximum(l1_s, _TINY))
        social1 = np.einsum("s,bsw->bw", VALUES, l1_s)
        at_hat = s1_hat.sum(axis=2)  # (B, g, w)
        pres = np.log(np.maximum(at_hat, _TINY)) - np.log(z)[:, None, :] + np.log(N_PHI)  # ln L1(phi_hat | w)
        util2 = (omega[..., 0, None, None] * log_l1_s[:, None] + omega[..., 1, None, None] * social1[:, None, None, :]
                 + omega[..., 2, None, None] * pres[:, :, None, :] - c4 * NEGATED)
        x2 = a4 * util2
        top = x2.max(axis=3, keepdims=True)
        log_s2 = x2 - (top + np.log(np.exp(np.maximum(x2 - top, _MIN_EXPONENT)).sum(axis=3, keepdims=True)))
        values = -(counts * log_s2).sum(axis=(1, 2, 3))
        if self.joint:
            values -= (k * np.log(theta) + (n - k) * np.log1p(-theta)).sum(axis=(1, 2))
        if not gradient:
            return values, None, log_s2
        # ---- reverse mode
        g2 = -(counts - counts.sum(axis=3, keepdims=True) * np.exp(log_s2))  # d/d x2
        d_alpha = (g2 * util2).sum(axis=(1, 2, 3))
        gu = a4 * g2
        d_omega = np.stack([(gu * log_l1_s[:, None]).sum(axis=(2, 3)), (gu * social1[:, None, None, :]).sum(axis=(2, 3)),
                            (gu * pres[:, :, None, :]).sum(axis=(2, 3))], axis=2)  # (B, g, 3)
        d_cost = -(gu * NEGATED).sum(axis=(1, 2, 3))
        d_log_l1_s = (gu * omega[..., 0, None, None]).sum(axis=1)
        d_social1 = (gu * omega[..., 1, None, None]).sum(axis=(1, 2))
        d_pres = (gu * omega[..., 2, None, None]).sum(axis=2)  # (B, g, w)
        d_omega_logits = omega[..., :2] * (d_omega[..., :2] - (omega * d_omega).sum(axis=2, keepdims=True))
        # the presentational term: through S1 at phi_hat, and through the normaliser z
        d_s1_hat = np.where(at_hat > _TINY, d_pres / np.maximum(at_hat, _TINY), 0.0)[:, :, None, :]
        d_x1_hat = s1_hat * (d_s1_hat - (s1_hat * d_s1_hat).sum(axis=3, keepdims=True))
        d_alpha += (d_x1_hat * util1_hat).sum(axis=(1, 2, 3))
        d_util1_hat = a4 * d_x1_hat
        d_cost -= (d_util1_hat * NEGATED).sum(axis=(1, 2, 3))
        d_phi = (d_util1_hat * (log_l0_t[:, None] - social0[:, None, None, :])).sum(axis=(2, 3))
        # through L1 to S1 on the grid
        d_l1_s = VALUES[None, :, None] * d_social1[:, None, :] + np.where(l1_s > _TINY, d_log_l1_s / np.maximum(l1_s, _TINY), 0.0)
        d_z = -(d_l1_s * l1_s).sum(axis=1) / z - d_pres.sum(axis=1) / z
        d_by_state = (d_l1_s / z[:, None, :] + d_z[:, None, :])[:, None]
        d_x1 = s1 * (d_by_state - (s1 * d_by_state).sum(axis=3, keepdims=True))
        d_alpha += (d_x1 * util1).sum(axis=(1, 2, 3))
        d_util1 = a4 * d_x1
        d_cost -= (d_util1 * NEGATED).sum(axis=(1, 2, 3))
        per_goal_grad = np.concatenate([d_omega_logits, (d_phi * phi * (1 - phi))[..., None]], axis=2).reshape(size, -1)
        grads = [(d_alpha * alpha)[:, None], d_cost[:, None], per_goal_grad]
        if self.joint:
            d_log_l0 = ((d_util1 * PHI_GRID[None, :, None, None]).sum(axis=1)
                        + (d_util1_hat * phi[..., None, None]).sum(axis=1)).transpose(0, 2, 1)  # (B, w, s)
            d_social0 = ((d_util1 * (1 - PHI_GRID)[None, :, None, None]).sum(axis=(1, 2))
                         + (d_util1_hat * (1 - phi)[..., None, None]).sum(axis=(1, 2)))
            d_l0 = d_social0[:, :, None] * VALUES[None, None, :]
            d_theta = d_log_l0 / theta + d_l0 / total_theta[..., None]
            d_total = -d_log_l0.sum(axis=2) / total_theta - (d_l0 * theta).sum(axis=2) / total_theta ** 2
            d_theta += d_total[..., None] - k / theta + (n - k) / (1 - theta)
            grads.append((d_theta * theta * (1 - theta)).reshape(size, -1))
        return values, np.concatenate(grads, axis=1), log_s2


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (exponents floored: see _MIN_EXPONENT)."""
    e = np.exp(np.maximum(x - x.max(axis=-1, keepdims=True), _MIN_EXPONENT))
    return e / e.sum(axis=-1, keepdims=True)


def speaker_distribution(params: PoliteParameters) -> np.ndarray:
    """S2(w | s, goal) as probabilities: (3 goals, 4 states, 8 utterances)."""
    return np.exp(log_speaker2(params))


# ---------------------------------------------------------------- maximum likelihood


@dataclass
class PoliteFit:
    """A fitted polite speaker for one source: the estimate, its fit to the data, and bootstrap draws."""

    params: PoliteParameters
    semantics_mode: str
    log_likelihood: float  # of the source's production data
    observations: float
    observed: np.ndarray  # (3, 4, 8) proportions (NaN where a cell has no data)
    predicted: np.ndarray  # (3, 4, 8)
    goals_with_data: tuple[bool, ...]
    correlation: float
    seed: int
    starts: int
    seconds: float = 0.0  # wall time, estimate and bootstrap
    cpu_seconds: float = 0.0  # CPU time of this process (one thread): the one-core cost even on a busy machine
    units: int = 0
    bootstrap: Optional[np.ndarray] = None  # (resamples, len(estimate_names()))
    bootstrap_method: str = ""
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


def _minimise(problem: _Problem, start: np.ndarray, maxiter: int = 3000, ftol: float = _FTOL) -> optimize.OptimizeResult:
    """L-BFGS-B within the bounds with the exact gradient (run under ``threadpool_limits(1)``: see :func:`fit_polite`)."""
    lows, highs = zip(*problem.bounds)
    return optimize.minimize(problem, np.clip(start, lows, highs), jac=True, method="L-BFGS-B", bounds=problem.bounds,
                             options={"maxiter": maxiter, "ftol": ftol, "gtol": 1e-8})


def _starts(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Speaker-part starts: neutral (alpha 3, equal weights, phi 0.5), the paper's estimates on its human data (alpha 5,
    Table 1 weights), then random ones."""
    neutral = PoliteParameters(3.0, 0.5, np.full((3, 3), 1 / 3), np.full(3, 0.5), np.full((8, 4), 0.5)).vector()[:N_SPEAKER]
    paper = PoliteParameters(5.0, 0.3, np.array([PAPER_WEIGHTS[g][:3] for g in GOALS]), np.array([PAPER_WEIGHTS[g][3] for g in GOALS]),
                             np.full((8, 4), 0.5)).vector()[:N_SPEAKER]
    starts = [neutral, paper][:count]
    for _ in range(count - len(starts)):
        starts.append(np.concatenate([[rng.uniform(np.log(0.5), np.log(20.0)), rng.uniform(0.0, 2.0)],
                                      np.column_stack([rng.normal(0, 1.5, size=(3, 2)), rng.uniform(-3, 3, size=3)]).ravel()]))
    return starts


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


def _estimate(problem: _Problem, starts: list[np.ndarray]) -> optimize.OptimizeResult:
    """Every start run :data:`_SCREEN_ITERATIONS` iterations; the best :data:`_COMPLETED` of them run to convergence."""
    fill = problem.fixed_eta.ravel()
    vectors = [np.concatenate([s, fill]) if problem.joint else s for s in starts]
    screened = sorted((_minimise(problem, v, _SCREEN_ITERATIONS) for v in vectors), key=lambda r: r.fun)
    return min((_minimise(problem, r.x) for r in screened[:_COMPLETED]), key=lambda r: r.fun)


def log_speaker2(params: PoliteParameters) -> np.ndarray:
    """log S2(w | s, goal): (3 goals, 4 states, 8 utterances)."""
    dummy = LiteralSemantics(np.zeros((8, 4)), np.zeros((8, 4)), "", "")
    return _Problem(np.ones((3, 4, 8)), dummy, joint=True).batch(params.vector()[None, :], gradient=False)[2][0]


def fit_polite(counts: np.ndarray, semantics: LiteralSemantics, seed: int = 0, starts: int = DEFAULT_STARTS,
               unit_counts: Optional[np.ndarray] = None, resamples: int = DEFAULT_RESAMPLES,
               semantics_mode: str = "joint", bootstrap: str = "newton") -> PoliteFit:
    """Maximum-likelihood fit to ``counts`` (3 goals x 4 states x 8 utterances; expected counts allowed).

    ``unit_counts`` (units x 3 x 4 x 8, summing to ``counts``) enables the bootstrap: ``resamples`` resamples of whole units
    (and of the norming participants, for joint semantics), each re-estimated from the estimate: ``bootstrap="newton"``
    takes up to 12 projected Newton steps with the estimate's Hessian (a k-step bootstrap), ``"refit"`` runs the optimiser
    to convergence. Deterministic given ``seed``; BLAS runs on one thread.
    """
    counts = np.asarray(counts, float)
    if counts.shape != (len(GOALS), 4, 8) or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"counts must be a non-negative (3, 4, 8) array, got shape {counts.shape}")
    if semantics_mode not in SEMANTICS_MODES:
        raise ValueError(f"semantics_mode must be one of {SEMANTICS_MODES}, got {semantics_mode!r}")
    if bootstrap not in BOOTSTRAP_METHODS:
        raise ValueError(f"bootstrap must be one of {tuple(BOOTSTRAP_METHODS)}, got {bootstrap!r}")
    started, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1):
        joint = semantics_mode == "joint"
        rng = np.random.default_rng(seed)
        problem = _Problem(counts, semantics, joint)
        result = _estimate(problem, _starts(rng, starts))
        x = problem.full(result.x)
        params = PoliteParameters.from_vector(x)
        log_s2 = log_speaker2(params)
        predicted = np.exp(log_s2)
        fit = PoliteFit(params, semantics_mode, float((counts * log_s2).sum()), float(counts.sum()), _proportions(counts), predicted,
                        tuple(bool(counts[g].sum() > 0) for g in range(len(GOALS))), cell_correlation(counts, predicted), seed, starts)
        if not result.success:
            fit.notes.append(f"optimiser: {result.message}")
        fit.notes += _at_bounds(params)
        if unit_counts is not None:
            fit.units = len(unit_counts)
            if resamples > 0 and len(unit_counts) >= 2:
                fit.bootstrap = _bootstrap(np.asarray(unit_counts, float), semantics, problem, result.x, rng, resamples, bootstrap)
                fit.bootstrap_method = BOOTSTRAP_METHODS[bootstrap]
    fit.seconds, fit.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return fit


def _at_bounds(params: PoliteParameters) -> list[str]:
    notes = []
    if params.alpha >= ALPHA_BOUNDS[1] * 0.999:
        notes.append(f"alpha at its upper bound {ALPHA_BOUNDS[1]:g} (near-deterministic choices)")
    if params.alpha <= ALPHA_BOUNDS[0] * 1.001:
        notes.append(f"alpha at its lower bound {ALPHA_BOUNDS[0]:g} (the choices do not follow the speaker's utilities)")
    if params.cost >= COST_BOUNDS[1] * 0.999:
        notes.append(f"negation cost at its upper bound {COST_BOUNDS[1]:g}")
    return notes


# ---------------------------------------------------------------- bootstrap


def hessian(problem: _Problem, x: np.ndarray, step: float = 1e-5) -> np.ndarray:
    """The objective's Hessian at ``x``: central differences of the exact gradient, symmetrised."""
    n = len(x)
    out = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = step
        out[:, i] = (problem(x + e)[1] - problem(x - e)[1]) / (2 * step)
    return (out + out.T) / 2


def newton_refits(problem: _Problem, start: np.ndarray, curvature: np.ndarray, steps: int = _NEWTON_STEPS) -> np.ndarray:
    """Each data row of ``problem`` re-estimated from ``start`` by projected Newton steps with a fixed ``curvature`` (the
    estimate's Hessian; eigenvalues floored at 1e-6 of the largest): a bound's coordinate is held while the gradient pushes
    outward, a step is capped at 2 (unconstrained units) and halved until the objective does not increase, and a row stops
    when it no longer decreases. All rows advance together (one vectorised evaluation per step). Returns (rows, n)."""
    lows, highs = (np.array(b) for b in zip(*problem.bounds))
    count = len(problem.counts)
    xs = np.tile(np.clip(start, lows, highs), (count, 1))
    values, grads, _ = problem.batch(xs)
    assert grads is not None
    active = np.ones(count, bool)
    solved: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for _ in range(steps):
        rows = np.flatnonzero(active)
        if not len(rows):
            break
        free = ~(((xs[rows] <= lows + 1e-12) & (grads[rows] > 0)) | ((xs[rows] >= highs - 1e-12) & (grads[rows] < 0)))
        step = np.zeros((len(rows), len(start)))
        for pattern in np.unique(free, axis=0):
            if not pattern.any():
                continue
            key = pattern.tobytes()
            if key not in solved:
                eigenvalues, vectors = np.linalg.eigh(curvature[np.ix_(pattern, pattern)])
                solved[key] = (np.maximum(np.abs(eigenvalues), _EIGEN_FLOOR * max(np.abs(eigenvalues).max(), 1e-12)), vectors)
            eigenvalues, vectors = solved[key]
            group = np.flatnonzero((free == pattern).all(axis=1))
            step[np.ix_(group, np.flatnonzero(pattern))] = -(((grads[rows[group]][:, pattern] @ vectors) / eigenvalues) @ vectors.T)
        largest = np.abs(step).max(axis=1)
        step *= np.where(largest > 2.0, 2.0 / np.maximum(largest, 1e-300), 1.0)[:, None]
        moved = np.zeros(len(rows), bool)
        new_values = values[rows].copy()
        pending = np.arange(len(rows))
        for scale in (1.0, 0.5, 0.25, 0.125, 0.0625):
            if not len(pending):
                break
            trial = np.clip(xs[rows[pending]] + scale * step[pending], lows, highs)
            trial_values, trial_grads, _ = problem.batch(trial, rows[pending])
            assert trial_grads is not None
            better = trial_values <= values[rows[pending]]
            done = pending[better]
            xs[rows[done]], grads[rows[done]], new_values[done] = trial[better], trial_grads[better], trial_values[better]
            moved[done] = True
            pending = pending[~better]
        decrease = values[rows] - new_values
        values[rows] = new_values
        active[rows] = moved & (decrease >= 1e-10 * np.maximum(1.0, np.abs(new_values)))
    return xs


def _bootstrap(unit_counts: np.ndarray, semantics: LiteralSemantics, problem: _Problem, estimate: np.ndarray,
               rng: np.random.Generator, resamples: int, method: str) -> np.ndarray:
    units = len(unit_counts)
    flat = unit_counts.reshape(units, -1)
    weights = rng.multinomial(units, np.full(units, 1 / units), size=resamples)
    counts = (weights @ flat).reshape(resamples, len(GOALS), 4, 8)
    counts = counts[counts.sum(axis=(1, 2, 3)) > 0]
    people, people_judged = semantics.participant_true, semantics.participant_judged
    norming = None
    if problem.joint and people is not None and people_judged is not None:  # the norming participants are resampled too
        picks = rng.multinomial(len(people), np.full(len(people), 1 / len(people)), size=resamples)[:len(counts)]
        norming = (np.tensordot(picks, people, axes=1), np.tensordot(picks, people_judged, axes=1))
    resampled = _Problem(counts, semantics, problem.joint, norming)
    if method == "newton":
        xs = newton_refits(resampled, estimate, hessian(problem, estimate))
    else:
        xs = np.array([_minimise(_Problem(c, semantics, problem.joint, None if norming is None else (norming[0][i], norming[1][i])),
                                 estimate).x for i, c in enumerate(counts)])
    predicted = np.exp(resampled.batch(xs, gradient=False)[2])
    draws = []
    for i, x in enumerate(xs):
        params = PoliteParameters.from_vector(resampled.full(x))
        named = params.named()
        named[(None, "correlation")] = cell_correlation(counts[i], predicted[i])
        for g, goal in enumerate(GOALS):
            if counts[i, g].sum() <= 0:
                named.update({(goal, name): float("nan") for name in PARAMETER_NAMES})
        draws.append([named[key] for key in estimate_names()])
    return np.array(draws).reshape(len(draws), len(estimate_names()))


def simulate_counts(params: PoliteParameters, trials_per_cell: int, rng: np.random.Generator) -> np.ndarray:
    """Choices drawn from the model: (trials_per_cell draws per goal x state) -> counts (3, 4, 8)."""
    p = speaker_distribution(params)
    return np.array([[rng.multinomial(trials_per_cell, p[g, s] / p[g, s].sum()) for s in STATES] for g in range(len(GOALS))],
                    float)
