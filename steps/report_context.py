"""What every section of the HTML report is drawn from, in one object, and the HTML helpers the sections share.

A section is a function ``(ReportContext) -> str`` (HTML); :data:`steps.report.SECTIONS` lists
them in page order, so adding a section is one line there.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from schemas.settings import AnalysisSettings
from steps.human import HumanTable


@dataclass
class ReportContext:
    """The run's analysis tables (study -> table), validation results, human data files, the long comparison table and
    the analysis settings; ``cache`` lets sections share results computed once (e.g. the findings)."""

    tables: dict[int, pd.DataFrame]
    validations: dict[int, dict]
    run_id: str
    code_version: str
    human: dict[int, HumanTable] = field(default_factory=dict)
    comparison: Optional[pd.DataFrame] = None
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    cache: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)  # study -> the papers' model fit tables (parameters, predictions)

    def human_frame(self, study: int) -> Optional[pd.DataFrame]:
        """The human trials of ``study``, or None without a human file."""
        human = self.human.get(study)
        return human.frame if human is not None else None

    @property
    def studies(self) -> list[int]:
        """Every study with an analysis table or a human file."""
        return sorted(set(self.tables) | set(self.human))


def png(fig) -> str:
    """``fig`` as an embedded PNG <img> (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def html_table(frame: pd.DataFrame, index: bool = True) -> str:
    """``frame`` as a compact HTML table (3 decimals, NA for missing)."""
    return frame.to_html(border=0, classes="t", na_rep="NA", index=index, float_format=lambda v: f"{v:.3f}")
