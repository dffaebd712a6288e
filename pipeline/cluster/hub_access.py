"""Check, before any GPU is requested, that the HF token may download every gated model of a run.

Gated models (Gemma-2, Llama-3.1) need a token whose account accepted the model's license;
without it every vLLM start fails only after its wait. The workflow's ``plan`` step asks the
Hugging Face API (``GET {HF_ENDPOINT}/api/models/<repo>/auth-check``, as huggingface_hub's
``auth_check`` does: 200 access, 401 no or invalid token, 403 gated and not granted) and
stops the run with exit 2 naming the model and the Secret. A hub that cannot be reached is
reported as a warning only (a cluster may serve weights from its own cache).
"""

from __future__ import annotations

import os
from typing import Optional

import httpx

from schemas.settings import ModelSpec
from steps.errors import ConfigError

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
HF_TOKEN_ENV = "HF_TOKEN"


def check_hub_access(models: list[ModelSpec], secret: str, http: httpx.Client, token: Optional[str] = None,
                     endpoint: Optional[str] = None) -> list[str]:
    """Raise ConfigError listing every gated model the token cannot download; return warnings.

    ``token`` defaults to ``$HF_TOKEN``, ``endpoint`` to ``$HF_ENDPOINT`` or the public hub.
    The token is sent only to the hub and never appears in a message.
    """
    token = token if token is not None else os.environ.get(HF_TOKEN_ENV) or None
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")
    problems, warnings = [], []
    for model in (m for m in models if m.gated and m.engine == "vllm"):
        if not token:
            problems.append(f"{model.name} ({model.hf_id}) is gated and no Hugging Face token is set")
            continue
        try:
            response = http.get(f"{endpoint}/api/models/{model.hf_id}/auth-check", headers={"Authorization": f"Bearer {token}"},
                                timeout=20.0)
        except httpx.HTTPError as exc:
            warnings.append(f"could not check access to {model.hf_id} ({type(exc).__name__}); continuing")
            continue
        if response.status_code == 200:
            continue
        reason = {401: "the token is invalid or expired", 403: "the token's account has not been granted access "
                  "(accept the license on the model's page)", 404: "the repository does not exist"}.get(
                      response.status_code, f"the hub answered HTTP {response.status_code}")
        if response.status_code in (401, 403, 404):
            problems.append(f"{model.name} ({model.hf_id}): {reason}")
        else:
            warnings.append(f"could not check access to {model.hf_id}: {reason}; continuing")
    if problems:
        raise ConfigError("gated model(s) cannot be downloaded with the Hugging Face token from the Secret "
                          f"{secret!r} (key 'token'):\n  " + "\n  ".join(problems) +
                          f"\nCreate or fix it: kubectl create secret generic {secret} --from-literal=token=<token>")
    return warnings
