"""The plan step's gated-model check against the Hugging Face API (respx)."""

from __future__ import annotations

import httpx
import pytest
import respx

from pipeline.cluster.hub_access import check_hub_access
from pipeline.registry import load_registry
from steps.errors import ConfigError

HUB = "https://huggingface.co"
TOKEN = "hf_secret_value"


def _models(*names):
    registry = load_registry()
    return [registry[n] for n in names]


@respx.mock
def test_access_granted_passes_and_sends_the_token_only_to_the_hub():
    route = respx.get(f"{HUB}/api/models/meta-llama/Llama-3.1-8B-Instruct/auth-check").respond(200)
    with httpx.Client() as http:
        assert check_hub_access(_models("llama-3.1-8b-instruct", "deepseek-r1-distill-llama-8b"), "grace-hf-token", http, TOKEN) == []
    assert route.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(respx.calls) == 1  # the DeepSeek distill is not gated: not checked


@pytest.mark.parametrize("status, reason", [(401, "invalid or expired"), (403, "not been granted access"), (404, "does not exist")])
@respx.mock
def test_no_access_names_the_model_and_the_secret(status, reason):
    respx.get(f"{HUB}/api/models/google/gemma-2-9b-it/auth-check").respond(status)
    respx.get(f"{HUB}/api/models/meta-llama/Llama-3.1-8B-Instruct/auth-check").respond(200)
    with httpx.Client() as http, pytest.raises(ConfigError) as caught:
        check_hub_access(_models("gemma-2-9b-it", "llama-3.1-8b-instruct"), "grace-hf-token", http, TOKEN)
    message = str(caught.value)
    assert "gemma-2-9b-it" in message and reason in message and "grace-hf-token" in message and TOKEN not in message
    assert "llama-3.1-8b-instruct" not in message and caught.value.exit_code == 2


def test_no_token_fails_without_asking(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with respx.mock(assert_all_called=False) as mocked, httpx.Client() as http, pytest.raises(ConfigError, match="no Hugging Face token"):
        check_hub_access(_models("gemma-2-2b-it"), "grace-hf-token", http)
    assert not mocked.calls


@respx.mock
def test_an_unreachable_hub_is_only_a_warning():
    respx.get(f"{HUB}/api/models/google/gemma-2-2b-it/auth-check").mock(side_effect=httpx.ConnectError("no route"))
    with httpx.Client() as http:
        warnings = check_hub_access(_models("gemma-2-2b-it"), "grace-hf-token", http, TOKEN)
    assert warnings and "google/gemma-2-2b-it" in warnings[0]
