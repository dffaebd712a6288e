"""Synthetic human data files whose distributions are known by construction (these are not real participants).

Study 2 (Yoon et al. 2020 format): 50 participants, each with one trial per goal x state (12).
In cell (informative, heart0) 29 of 50 say "It was terrible" (0.58), 11 "It wasn't good",
10 "It was bad"; in (informative, heart3) 48 of 50 say "It was amazing" and 2 "It was good";
every other cell: participant i says utterance i % 8.
Study 1 (this project's long format): 20 participants x the 9 access x observe cells; bets
with the upper-bounded reading at full access (3 of 3 seen).
Study 2 with the paper's directions (:func:`write_human2_paper`): 120 participants drawing, with a
fixed seed, from per-cell chances in which every effect Yoon et al. (2020) report points the
published way (more negation with both goals, most in bad states; white lies with a kind goal).
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


# Study 2 with the direction of every effect Yoon et al. (2020) report (a synthetic file, not their data): per goal and
# state, the chance of each utterance; participants draw one utterance per cell with a fixed seed.
ORDER = ("was terrible", "was bad", "was good", "was amazing", "wasn't terrible", "wasn't bad", "wasn't good", "wasn't amazing")
PAPER_CELLS = {
    ("informative", 0): {"was terrible": .55, "was bad": .15, "wasn't good": .15, "wasn't amazing": .05, "wasn't terrible": .05,
                         "wasn't bad": .05},
    ("informative", 1): {"was bad": .3, "wasn't good": .3, "wasn't amazing": .2, "wasn't terrible": .1, "was terrible": .05,
                         "was good": .05},
    ("informative", 2): {"was good": .75, "wasn't amazing": .1, "wasn't bad": .05, "was amazing": .1},
    ("informative", 3): {"was amazing": .9, "was good": .1},
    ("social", 0): {"was good": .25, "was amazing": .1, "wasn't terrible": .3, "wasn't bad": .2, "was terrible": .1, "was bad": .05},
    ("social", 1): {"was good": .35, "was amazing": .1, "wasn't terrible": .2, "wasn't bad": .25, "was bad": .1},
    ("social", 2): {"was good": .5, "was amazing": .45, "wasn't bad": .05},
    ("social", 3): {"was amazing": .9, "was good": .1},
    ("both", 0): {"wasn't terrible": .4, "wasn't bad": .2, "wasn't good": .1, "wasn't amazing": .05, "was terrible": .15,
                  "was good": .05, "was bad": .05},
    ("both", 1): {"wasn't terrible": .3, "wasn't bad": .25, "wasn't amazing": .15, "wasn't good": .05, "was good": .15, "was bad": .1},
    ("both", 2): {"was good": .85, "wasn't bad": .1, "was amazing": .05},
    ("both", 3): {"was amazing": .85, "was good": .15},
}
ITEMS2 = ("poem", "cake", "presentation", "song", "painting", "speech", "dinner", "essay", "recital", "film", "app", "cookie", "solo")


def paper_cell_distribution(goal: str, state: int) -> list[float]:
    """The synthetic chance of each utterance (in ORDER) for a goal ('informative' / 'social' / 'both') and state."""
    cell = PAPER_CELLS[(goal, state)]
    return [cell.get(u, 0.0) for u in ORDER]


def write_human2_paper(path: Path, participants: int = 120, seed: int = 7) -> Path:
    """A Study 2 human file whose participants choose with the chances of PAPER_CELLS (one trial per goal x state each)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as f:
        out = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        out.writerow(["subid", "trial", "item", "goal", "true_state", "positivity", "utterance"])
        for p in range(participants):
            for trial, (goal, state) in enumerate(PAPER_CELLS, start=1):
                frame, word = ORDER[rng.choice(len(ORDER), p=paper_cell_distribution(goal, state))].split()
                out.writerow([f"sub-{p:03d}", trial, ITEMS2[(p + trial) % len(ITEMS2)], goal, f"heart{state}",
                              "neg" if frame == "wasn't" else "no_neg", word])
    return path
