"""Human data the models are compared with, and the long human-vs-model table for R.

Study 2: speaker production as Yoon, Tessler, Goodman & Frank (2020) published it
(``speaker_production.csv``: one row per trial, ``subid, trial, item, goal, true_state,
positivity, utterance``). Study 1: a long format of this project (one row per trial; see
:class:`Human1Trial`), for Goodman & Stuhlmueller (2013)-style data. The study files'
``Utterance`` column is NOT human data (it is a counterbalanced column of the materials).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

GOAL_NAMES = {"informative": "informational", "informational": "informational", "social": "social", "both": "both"}
STATE_NAMES = {f"heart{k}": k for k in range(4)}
POSITIVITY = {"no_neg": "was", "neg": "wasn't"}
HUMAN2_ASSESSMENTS = ("terrible", "bad", "good", "amazing")


class Human2Trial(BaseModel):
    """One speaker-production trial of Study 2 (Yoon et al. 2020), as read from the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subid: str = Field(min_length=1, description="Participant id (bootstrap intervals resample participants)")
    trial: int = Field(ge=0, description="Trial number within the participant")
    item: str = Field(min_length=1, description="Scenario item (poem, cake, ...)")
    goal: Literal["informative", "informational", "social", "both"] = Field(description="Speaker's goal ('informative' as published)")
    true_state: Literal["heart0", "heart1", "heart2", "heart3"] = Field(description="True quality: heart0 .. heart3")
    positivity: Literal["no_neg", "neg"] = Field(description="no_neg = 'It was ...', neg = 'It wasn't ...'")
    utterance: Literal["terrible", "bad", "good", "amazing"] = Field(description="The chosen adjective")


class Human1Trial(BaseModel):
    """One Study 1 trial of a human participant (this project's long format).

    ``subid, story, access, observe`` are required; the responses are whatever subset was
    collected: ``prior`` (0-3, the answer to the prior question), ``bet_0 .. bet_3`` (the
    bets on exactly 0..3 items after the statement, any non-negative amounts: they are
    normalised per trial), ``knowledge`` (yes/no). A trial needs at least one response.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subid: str = Field(min_length=1, description="Participant id")
    trial: Optional[int] = Field(None, ge=0, description="Trial number within the participant (optional)")
    story: str = Field(min_length=1, description="Story (exams, letters, ...)")
    access: int = Field(ge=1, le=3, description="Items the speaker looked at (1-3)")
    observe: int = Field(ge=0, le=3, description="Items the speaker said have the property")
    prior: Optional[int] = Field(None, ge=0, le=3, description="Prior answer: how many of the 3 have the property (0-3)")
    bet_0: Optional[float] = Field(None, ge=0, description="Bet on exactly 0 items having the property")
    bet_1: Optional[float] = Field(None, ge=0, description="Bet on exactly 1")
    bet_2: Optional[float] = Field(None, ge=0, description="Bet on exactly 2")
    bet_3: Optional[float] = Field(None, ge=0, description="Bet on exactly 3")
    knowledge: Optional[Literal["yes", "no"]] = Field(None, description="Does the speaker know exactly how many?")

    @model_validator(mode="after")
    def _consistent(self) -> "Human1Trial":
        if self.observe > self.access:
            raise ValueError(f"observe ({self.observe}) cannot exceed access ({self.access})")
        bets = [self.bet_0, self.bet_1, self.bet_2, self.bet_3]
        if any(b is not None for b in bets):
            given = [b for b in bets if b is not None]
            if len(given) < len(bets):
                raise ValueError("bet_0 .. bet_3 must all be given, or all be empty")
            if sum(given) <= 0:
                raise ValueError("the four bets sum to 0: nothing to normalise")
        elif self.prior is None and self.knowledge is None:
            raise ValueError("the trial has no response: give prior, bet_0..bet_3 and/or knowledge")
        return self


HUMAN1_REQUIRED = ("subid", "story", "access", "observe")
HUMAN1_OPTIONAL = ("trial", "prior", "bet_0", "bet_1", "bet_2", "bet_3", "knowledge")
HUMAN2_REQUIRED = tuple(Human2Trial.model_fields)


class ComparisonRow(BaseModel):
    """One row of ``comparison/human_model_comparison``: a response option in a condition cell, from one source.

    Humans: ``value`` is the proportion of trials (or the mean normalised bet); models: the
    mean over items of each item's share of coded Experiment 1 answers, or of its Experiment 2
    probability (see :mod:`steps.responses` for the units).
    """

    model_config = ConfigDict(extra="forbid")

    study: int = Field(ge=1, description="Study number")
    measure: Literal["utterance", "bet", "prior", "knowledge"] = Field(
        description="utterance (Study 2 speaker choice); bet (Study 1 belief in exactly k of 3, normalised over k); "
                    "prior (Study 1 prior answer 0-3); knowledge (Study 1 'does the speaker know')")
    cell: str = Field(description="Condition cell, e.g. 'goal=social, state=0' or 'access=3, observe=2'")
    goal: Optional[Literal["informational", "social", "both"]] = Field(None, description="Study 2 goal")
    state: Optional[int] = Field(None, ge=0, le=3, description="Study 2 true state (hearts)")
    access: Optional[int] = Field(None, ge=1, le=3, description="Study 1 items looked at")
    observe: Optional[int] = Field(None, ge=0, le=3, description="Study 1 items reported")
    option: str = Field(description="Response option: an utterance ('It wasn't bad'), a number of items ('2'), or yes/no")
    source: Literal["human", "model"] = Field(description="Who answered")
    experiment: Optional[Literal["exp1_coded", "exp2_probabilities"]] = Field(
        None, description="For models: Experiment 1 coded answers, or Experiment 2 probabilities (empty for humans)")
    model: Optional[str] = Field(None, description="Model name (empty for humans)")
    unit: str = Field(description="The unit n counts and the interval resamples: 'participant trial' (one per participant and "
                                  "cell), 'participant', 'story' (Study 1 items) or 'scenario item' (Study 2 items)")
    n: int = Field(ge=0, description="Units in the cell (models: items, each item's answers or prompts averaged first)")
    participants: Optional[int] = Field(None, ge=0, description="Distinct participants in the cell (humans)")
    value: Optional[float] = Field(None, ge=0, le=1, description="Proportion or mean normalised bet (humans); mean over items "
                                                                "of the share of coded answers or of the probability (models)")
    lower: Optional[float] = Field(None, ge=0, le=1, description="Lower end of the 95% interval")
    upper: Optional[float] = Field(None, ge=0, le=1, description="Upper end of the 95% interval")
    interval: Optional[str] = Field(None, description="How the interval was computed")
