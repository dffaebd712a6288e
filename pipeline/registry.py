"""The model registry shipped with the package (``pipeline/models.yaml``)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import ValidationError

from schemas.settings import ModelSpec
from steps.errors import ConfigError

_SAFE = re.compile(r"[^a-z0-9._-]+")


def model_slug(name: str) -> str:
    """A file-name-safe slug: 'meta-llama/Llama-3.1-8B' -> 'meta-llama--llama-3.1-8b'.

    Never empty and never '.'/'..', so it cannot escape the run's folder.
    """
    slug = _SAFE.sub("-", name.lower().replace("/", "--")).strip("-.")
    if not slug:
        raise ConfigError(f"model name {name!r} has no letters or digits to build a file name from")
    return slug


@lru_cache(maxsize=None)
def load_registry() -> dict[str, ModelSpec]:
    """All registry entries by name."""
    text = (resources.files("pipeline") / "models.yaml").read_text(encoding="utf-8")
    entries = yaml.safe_load(text)["models"]
    registry: dict[str, ModelSpec] = {}
    for position, entry in enumerate(entries):
        try:
            spec = ModelSpec.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"pipeline/models.yaml entry {position + 1}: {exc}") from exc
        if spec.name in registry:
            raise ConfigError(f"pipeline/models.yaml: model {spec.name!r} is listed twice")
        registry[spec.name] = spec
    return registry


EMBEDDED_DEFAULT = "gemma-3-270m"


def resolve_model(name: str, external: bool) -> ModelSpec:
    """The registry entry for ``name``; an unknown name is allowed only for an external endpoint.

    An unknown model served by the user's own server gets a generic chat entry whose
    requests use ``name`` as the model id.
    """
    registry = load_registry()
    if name in registry:
        return registry[name]
    if not external:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown model {name!r}: use one of {known}, or give its server with --endpoint {name}=URL")
    return ModelSpec(name=name, hf_id=name, served_name=name, notes="not in the registry; given with --endpoint")
