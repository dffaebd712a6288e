"""Synthetic human data files whose distributions are known by construction (these are not real participants).

Study 2 (Yoon et al. 2020 format): 50 participants, each with one trial per goal x state (12).
In cell (informative, heart0) 29 of 50 say "It was terrible" (0.58), 11 "It wasn't good",
10 "It was bad"; in (informative, heart3) 48 of 50 say "It was amazing" and 2 "It was good";
every other cell: participant i says utterance i % 8.
Study 1 (this project's long format): 20 participants x the 9 access x observe cells; bets
with the upper-bounded reading at full access (3 of 3 seen).
"""

from __future__ import annotations

import csv
from pathlib import Path

PARTICIPANTS2 = 50
ASSESSMENT_WORDS = ("terrible", "bad", "good", "amazing")
UTTERANCE_CODES = [("no_neg", a) for a in ASSESSMENT_WORDS] + [("neg", a) for a in ASSESSMENT_WORDS]


def study2_choice(participant: int, goal: str, state: int) -> tuple[str, str]:
    """(positivity, utterance) of one synthetic trial."""
    if goal == "informative" and state == 0:
        return ("no_neg", "terrible") if participant < 29 else ("neg", "good") if participant < 40 else ("no_neg", "bad")
    if goal == "informative" and state == 3:
        return ("no_neg", "amazing") if participant < 48 else ("no_neg", "good")
    return UTTERANCE_CODES[participant % 8]


def write_human2(path: Path, participants: int = PARTICIPANTS2) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        out.writerow(["subid", "trial", "item", "goal", "true_state", "positivity", "utterance"])
        for p in range(participants):
            trial = 0
            for goal in ("informative", "social", "both"):
                for state in range(4):
                    trial += 1
                    positivity, utterance = study2_choice(p, goal, state)
                    out.writerow([f"worker-{p:03d}.json", trial, "poem", goal, f"heart{state}", positivity, utterance])
    return path


def study1_bets(participant: int, access: int, observe: int) -> list[int]:
    """Bets (dollars out of 100) on exactly 0..3 items: upper-bounded at full access, not at partial access."""
    bets = [0, 0, 0, 0]
    if access == 3:
        bets[observe] = 80 + participant % 5
        if observe < 3:
            bets[3] = 100 - bets[observe]
        else:
            bets[2] = 100 - bets[observe]
    else:
        bets[observe] = 40
        bets[3] = 60 - participant % 3  # the stronger state gets more: the reading has disappeared
        if observe == 3:
            bets[2] = 0
    return bets


def write_human1(path: Path, participants: int = 20) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["subid", "trial", "story", "access", "observe", "prior", "bet_0", "bet_1", "bet_2", "bet_3", "knowledge"])
        for p in range(participants):
            trial = 0
            for access in (1, 2, 3):
                for observe in range(access + 1):
                    trial += 1
                    out.writerow([f"s{p}", trial, "exams", access, observe, 3 if p % 4 else 2, *study1_bets(p, access, observe),
                                  "yes" if access == 3 else "no"])
    return path
