"""What can be checked of the steps image without a Docker engine."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_entrypoint_is_the_packages_cli_and_user_is_not_root():
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    assert json.loads(entrypoint)[0] in scripts
    assert re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)[-1] not in ("root", "0")


def test_image_copies_every_package():
    dockerfile = (REPO / "images" / "steps.Dockerfile").read_text()
    for package in ("pipeline", "steps", "schemas"):
        assert f"COPY {package} {package}" in dockerfile
