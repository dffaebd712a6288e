"""The project's one retry policy: bounded attempts, exponential backoff with "equal jitter".

Every retry loop uses it: model-server requests (:mod:`steps.llm_client`, async, which adds
Retry-After and the retryable status codes) and the artifact store (:mod:`steps.store`,
run in a worker thread, never on the event loop). A hand-written loop is kept instead of a
library (tenacity, stamina): the HTTP loop must give its concurrency slot back while it
sleeps and honour Retry-After, which is a few lines here and awkward to express there, and
both loops share this one pure, tested delay function. (``pipeline.cluster.argo_api.ArgoClient.wait``
is a status poll that tolerates 3 transient failures in a row, not a retry loop; Hera's
service makes single requests.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

DEFAULT_MAX_ATTEMPTS = 4  # the first try + 3 retries (the seed's "retry 3 times")
DEFAULT_BASE_DELAY_S = 1.0
DEFAULT_MAX_DELAY_S = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry. Delay n (n = 1, 2, ...) is drawn from
    ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**(n-1))`` ("equal jitter")."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S


def backoff_delay(attempt: int, policy: RetryPolicy, retry_after_s: Optional[float] = None,
                  rng: Callable[[], float] = random.random) -> Optional[float]:
    """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` = attempts made so far), or None when
    the attempts are used up. A server's Retry-After wins over the backoff, capped at ``max_delay_s``."""
    if attempt >= policy.max_attempts:
        return None
    if retry_after_s is not None:
        return min(retry_after_s, policy.max_delay_s)
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2
