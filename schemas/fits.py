"""The papers' own models fitted to every source: ``fits/study<n>_rsa_parameters`` and ``fits/study<n>_rsa_predictions``.

Study 2: Yoon, Tessler, Goodman & Frank (2020)'s polite speaker (:mod:`steps.rsa_polite`). Study 1: Goodman &
Stuhlmueller (2013)'s knowledge-sensitive listener and an access-blind listener beside it (:mod:`steps.rsa_knowledge`).
A source is the human file, or one model's Experiment 1 coded answers or Experiment 2 probabilities. Both tables are
long: one row per (source, parameter [, goal]) and one row per (source, listener, cell, option).
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_FIT_SEED = 20200301
DEFAULT_RESAMPLES = 200
DEFAULT_STARTS = 8
SemanticsMode = Literal["joint", "fixed"]
BootstrapMethod = Literal["newton", "refit"]


class FitSettings(BaseModel):
    """How the papers' models are fitted (``grace-pipeline run`` and ``grace-pipeline fit`` options ``--fit-*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(DEFAULT_FIT_SEED, description="Seed of the optimiser's starts and the bootstrap resamples")
    resamples: int = Field(DEFAULT_RESAMPLES, ge=0, le=10000, description="Bootstrap resamples per source (0: no intervals)")
    starts: int = Field(DEFAULT_STARTS, ge=1, le=100, description="Optimiser starts of the polite speaker (Study 2)")
    semantics: Optional[str] = Field(None, description="Study 2 literal semantics norming file (path or s3://; default: the paper's, "
                                                      "shipped in steps/data)")
    semantics_mode: SemanticsMode = Field("joint", description="joint: the semantics are inferred with the choices, constrained by "
                                                               "the norming judgements (as the paper does); fixed: held at the "
                                                               "norming judgements' posterior mean")
    bootstrap: BootstrapMethod = Field("newton", description="newton: k-step bootstrap from the estimate (fast); refit: each "
                                                             "resample refitted to convergence (Study 2; slower)")

RsaModel = Literal["yoon2020_polite_speaker", "gs2013_listener", "gs2013_access_blind_listener"]
Experiment = Literal["exp1_coded", "exp2_probabilities"]
Goal = Literal["informational", "social", "both"]
Parameter = Literal["alpha", "negation_cost", "omega_inf", "omega_soc", "omega_pres", "phi", "informational_emphasis", "lapse",
                    "correlation", "log_likelihood_per_observation", "access_gain_per_observation"]
PARAMETERS = get_args(Parameter)


class FitParameterRow(BaseModel):
    """One fitted parameter (or fit statistic) of one paper's model for one source, with its bootstrap interval."""

    model_config = ConfigDict(extra="forbid")

    run_id: Optional[str] = Field(None, description="Run whose analysis tables were fitted")
    study: int = Field(ge=1, le=2, description="Study number")
    rsa_model: RsaModel = Field(description="yoon2020_polite_speaker (Study 2); gs2013_listener (Study 1, uses the speaker's access); "
                                            "gs2013_access_blind_listener (Study 1, takes every speaker to have seen all 3)")
    source: Literal["human", "model"] = Field(description="Whose answers were fitted")
    experiment: Optional[Experiment] = Field(None, description="For models: Experiment 1 coded answers or Experiment 2 probabilities")
    model: Optional[str] = Field(None, description="Model name (empty for humans)")
    goal: Optional[Goal] = Field(None, description="Study 2 goal condition of a per-goal parameter (empty for shared ones)")
    parameter: Parameter = Field(
        description="alpha: speaker optimality; negation_cost: cost c of 'It wasn't ...'; omega_inf, omega_soc, omega_pres: "
                    "the goal's weights on informational, social and presentational utility (sum 1); phi: the goal weight the "
                    "speaker projects (1 = informative, 0 = kind); informational_emphasis: omega_inf + omega_pres x phi, the goal's "
                    "weight on being or appearing informative (1 minus it: on being or appearing kind); lapse: share of bets spread "
                    "evenly over 0-3; correlation: "
                    "Pearson r of predictions with the source's proportions (Study 2: goal x state x utterance; Study 1: access "
                    "x observe x state); log_likelihood_per_observation; access_gain_per_observation: log-likelihood per "
                    "observation of the access-using listener minus the access-blind one's (> 0: the source uses access)")
    estimate: Optional[float] = Field(None, description="Maximum-likelihood estimate (empty for a goal without data)")
    lower: Optional[float] = Field(None, description="Lower end of the 95% bootstrap interval")
    upper: Optional[float] = Field(None, description="Upper end of the 95% bootstrap interval")
    interval: Optional[str] = Field(None, description="How the interval was made (empty when there are too few units to resample)")
    unit: Literal["participant", "item"] = Field(description="What the bootstrap resamples: participants (humans) or items "
                                                             "(models: Study 1 stories, Study 2 scenario domains)")
    units: int = Field(ge=0, description="Number of units in the source")
    resamples: int = Field(ge=0, description="Bootstrap resamples that were refitted")
    observations: float = Field(ge=0, description="Observations fitted: trials, coded answers, or distinct prompts (Experiment 2)")
    log_likelihood: float = Field(description="Log-likelihood of the source's data at the estimate (whole fit)")
    wall_ms: float = Field(ge=0, description="Wall time of the source's fit with its bootstrap (milliseconds)")
    cpu_ms: float = Field(ge=0, description="CPU time of the source's fit with its bootstrap (milliseconds, one thread): its cost on "
                                            "one core")
    seed: int = Field(description="Seed of the starts and resamples (the same data and seed give the same fit)")
    inputs: str = Field(description="What the model was given: Study 2 the literal semantics file (and sha256); Study 1 the prior")
    notes: Optional[str] = Field(None, description="Estimates at a bound, optimiser warnings")
    code_version: str = Field(description="grace-pipeline version (and git commit) that made the fit")


class FitPredictionRow(BaseModel):
    """The fitted model's prediction beside the source's data in one condition cell and response option."""

    model_config = ConfigDict(extra="forbid")

    run_id: Optional[str] = Field(None, description="Run whose analysis tables were fitted")
    study: int = Field(ge=1, le=2, description="Study number")
    rsa_model: RsaModel = Field(description="Which model's prediction (see the parameters table)")
    source: Literal["human", "model"] = Field(description="Whose answers were fitted")
    experiment: Optional[Experiment] = Field(None, description="For models: Experiment 1 coded answers or Experiment 2 probabilities")
    model: Optional[str] = Field(None, description="Model name (empty for humans)")
    measure: Literal["utterance", "bet"] = Field(description="utterance: Study 2 speaker choice; bet: Study 1 normalised bet on "
                                                             "exactly k of 3")
    cell: str = Field(description="Condition cell, e.g. 'goal=social, state=0' or 'access=3, observe=2'")
    goal: Optional[Goal] = Field(None, description="Study 2 goal")
    state: Optional[int] = Field(None, ge=0, le=3, description="Study 2 true state (hearts)")
    access: Optional[int] = Field(None, ge=1, le=3, description="Study 1 items looked at")
    observe: Optional[int] = Field(None, ge=0, le=3, description="Study 1 items reported")
    option: str = Field(description="An utterance ('It wasn't bad') or a number of items ('2')")
    observed: Optional[float] = Field(None, ge=0, le=1, description="The source's proportion (or mean bet) in the cell")
    predicted: float = Field(ge=0, le=1, description="The fitted model's probability (Study 1: averaged over the cell's stories "
                                                     "with the source's trial counts)")
    n: float = Field(ge=0, description="Observations in the cell")
