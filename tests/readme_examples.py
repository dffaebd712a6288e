"""Examples the README shows a researcher, read from README.md itself, so the tests run what the README says."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_registry() -> str:
    """The registry file of the README's "Adding models without code" (``my_models.yaml``)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Adding models without code.**"):]
    return re.search(r"```yaml\n(models:\n.*?)```", section, re.DOTALL).group(1)


def readme_registry_models() -> list[str]:
    """The model names the README's registry file adds."""
    return re.findall(r"name: ([^,}\s]+)", readme_registry())
