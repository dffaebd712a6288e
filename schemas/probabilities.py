"""Experiment 2 output: ``{model}_study{n}_probabilities``.

Column order: the seed's table (§3 for Study 1, §6 for Study 2) exactly, then the
study's other input columns, then provenance and quality columns. (The seed counts
"68 columns with the 9 inputs" for Study 1 but also lists ``model_name``; both are here.)
All probabilities are in [0, 1]; entropies are in bits.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.inputs import Study1Input, Study2Input

PERCENT_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
STATES = (0, 1, 2, 3)
FRAMES = ("was", "wasnt")
ASSESSMENTS = ("terrible", "bad", "good", "amazing")
ScoringMethod = Literal["exact", "first-token", "seed-literal"]

_P: dict[str, Any] = dict(ge=0.0, le=1.0)


def _prob(description: str):
    return (Optional[float], Field(None, description=description, **_P))


def _num(description: str):
    return (Optional[float], Field(None, description=description))


def _study1_seed_fields() -> dict:
    fields: dict = {name: (Study1Input.model_fields[name].annotation, Study1Input.model_fields[name])
                    for name in ("participant_id", "story_shortname", "access", "observe")}
    fields["model_name"] = (str, Field(description="Model used"))
    for k in STATES:
        for pct in PERCENT_BINS:
            fields[f"state{k}_prob_{pct}"] = _prob(f"P(answer '{pct}%' to 'how likely is it that exactly {k} of 3 have the property')")
    for k in STATES:
        fields[f"state{k}_mean"] = _num(f"Expected percentage for state {k} (0-100)")
        fields[f"state{k}_std"] = _num(f"Standard deviation of the percentage for state {k}")
        fields[f"state{k}_entropy"] = _num(f"Entropy (bits) of the state {k} distribution over the 11 percentages")
    fields["prob_knowledge_yes"] = _prob("P(knowledge answer = yes)")
    fields["prob_knowledge_no"] = _prob("P(knowledge answer = no)")
    fields["entropy_knowledge"] = _num("Entropy (bits) of the yes/no distribution")
    return fields


def _study2_seed_fields() -> dict:
    fields: dict = {name: (Study2Input.model_fields[name].annotation, Study2Input.model_fields[name])
                    for name in ("Participant_ID", "Domain", "Goal_simplified", "State_number")}
    fields["model_name"] = (str, Field(description="Model used"))
    fields["prob_was"] = _prob("P(frame = 'was'): sum of the four 'It was ...' joint probabilities")
    fields["prob_wasnt"] = _prob("P(frame = 'wasn't'): sum of the four 'It wasn't ...' joint probabilities")
    for a in ASSESSMENTS:
        fields[f"prob_{a}"] = _prob(f"P(assessment = '{a}'): 'It was {a}' + 'It wasn't {a}'")
    for f in FRAMES:
        for a in ASSESSMENTS:
            fields[f"prob_{f}_{a}"] = _prob(f"Joint P(\"It {f.replace('wasnt', 'wasn' + chr(39) + 't')} {a}\") among the 8 utterances")
    fields["entropy_frame"] = _num("Entropy (bits) of the frame distribution (2 values)")
    fields["entropy_assessment"] = _num("Entropy (bits) of the assessment distribution (4 values)")
    fields["entropy_joint"] = _num("Entropy (bits) of the joint distribution (8 utterances)")
    return fields


def _provenance_fields(masses: list[str]) -> dict:
    fields: dict = {
        "run_id": (str, Field(description="Run identifier")),
        "row_index": (int, Field(ge=0, description="0-based position of the row in the input file")),
        "model_id": (str, Field(description="Model id sent to the server")),
        "scoring_method": (ScoringMethod, Field(description="'exact' (probability that the reply starts with the option), "
                                                            "'first-token' (a repaired first-token variant, for comparison) or "
                                                            "'seed-literal' (the seed's method verbatim, for reproduction only)")),
    }
    for name in masses:
        fields[name] = (Optional[float], Field(None, ge=0.0, le=1.0, description="Total unnormalised probability the options carried "
                                                                               "(exact method): how much the model put on the answer set"))
    fields.update({
        "low_option_mass": (Optional[bool], Field(None, description="Some option set carried less probability than the run's "
                                                                    "--min-option-mass")),
        "first_token_problems": (Optional[str], Field(None, description="First-token method: options whose first token was shared or "
                                                                        "outside the top-k (they get no probability)")),
        "template_hash": (str, Field(description="sha256 (first 16 hex) of the study's Experiment 2 prompts and options")),
        "status": (Literal["ok", "failed"], Field(description="'ok' or 'failed' (no value is invented for a failed row)")),
        "error": (Optional[str], Field(None, description="Why the row could not be scored")),
    })
    return fields


STUDY1_MASS_COLUMNS = [f"state{k}_option_mass" for k in STATES] + ["knowledge_option_mass"]
STUDY2_MASS_COLUMNS = ["option_mass"]


def _build(name: str, seed: dict, input_model: type[BaseModel], masses: list[str]) -> type[BaseModel]:
    extras = {n: (f.annotation, f) for n, f in input_model.model_fields.items() if n not in seed}
    fields = {**seed, **extras, **_provenance_fields(masses)}
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=f"One row of {name}.", **fields)


Study1Probabilities = _build("Study1Probabilities", _study1_seed_fields(), Study1Input, STUDY1_MASS_COLUMNS)
Study2Probabilities = _build("Study2Probabilities", _study2_seed_fields(), Study2Input, STUDY2_MASS_COLUMNS)
SEED_COLUMN_COUNT = {1: len(_study1_seed_fields()), 2: len(_study2_seed_fields())}

# keyed by a study definition's ``probability_summary``
PROBABILITY_ROW_MODELS: dict[str, type[BaseModel]] = {
    "study1_states": Study1Probabilities,
    "study2_utterances": Study2Probabilities,
}
