"""The model registry: the one shipped with the package (``pipeline/models.yaml``), merged with a researcher's YAML (``--registry``)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Optional

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


def _entries(text: str, source: str) -> list[dict]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
        raise ConfigError(f"{source} must have a top-level 'models:' list of entries, each with a 'name' (see pipeline/models.yaml)")
    return entries


def _validated(entries: list[dict], source: str, base: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """``base`` with ``entries`` merged over it: an entry naming a model in ``base`` replaces the fields it gives."""
    registry = dict(base)
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        name = entry["name"]
        if name in seen:
            raise ConfigError(f"{source}: model {name!r} is listed twice")
        seen.add(name)
        merged = {**base[name].model_dump(exclude_unset=True), **entry} if name in base else entry
        try:
            registry[name] = ModelSpec.model_validate(merged)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{source} entry {position + 1} ({name!r}): {details}") from exc
    return registry


@lru_cache(maxsize=None)
def shipped_registry() -> dict[str, ModelSpec]:
    """The registry shipped with the package, by name."""
    text = (resources.files("pipeline") / "models.yaml").read_text(encoding="utf-8")
    return _validated(_entries(text, "pipeline/models.yaml"), "pipeline/models.yaml", {})


def load_registry(extra: Optional[str] = None, s3_endpoint: Optional[str] = None) -> dict[str, ModelSpec]:
    """All registry entries by name: the shipped registry, with the researcher's YAML ``extra`` merged over it.

    ``extra`` is a path, ``file://`` or ``s3://`` URL of a file shaped like ``pipeline/models.yaml``;
    its entries add models, or (same name) replace the fields they give of a shipped one. Nothing
    in the code has to change to add a model.
    """
    if not extra:
        return dict(shipped_registry())
    from steps.store import read_url

    data = read_url(extra, s3_endpoint)
    if data is None:
        raise ConfigError(f"--registry {extra}: file not found")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--registry {extra} is not UTF-8 text") from exc
    return _validated(_entries(text, extra), extra, shipped_registry())


EMBEDDED_DEFAULT = "gemma-3-270m"


def resolve_model(name: str, external: bool, registry: Optional[dict[str, ModelSpec]] = None) -> ModelSpec:
    """The registry entry for ``name``; an unknown name is allowed only for an external endpoint.

    An unknown model served by the user's own server gets a generic chat entry whose
    requests use ``name`` as the model id (both experiments use that server's chat template).
    """
    registry = shipped_registry() if registry is None else registry
    if name in registry:
        return registry[name]
    if not external:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown model {name!r}: use one of {known}, add it with --registry FILE, "
                          f"or give its server with --endpoint {name}=URL")
    return ModelSpec(name=name, hf_id=name, served_name=name, notes="not in the registry; given with --endpoint")
