"""Inference rates from Prometheus: the query API's URL and answer (pure) and one HTTP GET
with a timeout (the edge, used only by the budget timer).

The rate is Triton's `nv_inference_count` summed over the model's pods, per second over 5
minutes; with the spend rate it gives status.cost.usdPerMillionInferences.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from optimodel.operator.autoscaling import PrometheusSource

USER_AGENT = "optimodel-operator"


class PrometheusError(Exception):
    """Prometheus could not be asked, or refused the query."""


def instant_query_url(base_url: str, query: str) -> str:
    """GET URL of an instant query (Prometheus HTTP API /api/v1/query)."""
    return f"{base_url.rstrip('/')}/api/v1/query?{urlencode({'query': query})}"


def parse_instant_value(payload: object) -> float | None:
    """The value of a one-series instant query answer; None when there is no series (no pod
    was scraped) or the value is not a finite, non-negative number."""
    if not isinstance(payload, Mapping):
        raise PrometheusError("the answer is not a JSON object")
    if payload.get("status") != "success":
        raise PrometheusError(
            f"{payload.get('errorType', 'error')}: {payload.get('error', 'query failed')}"
        )
    data = payload.get("data")
    if not isinstance(data, Mapping):
        raise PrometheusError("the answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample: Any = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"expected one series, got {len(result)}")
        sample = result[0].get("value") if isinstance(result[0], Mapping) else None
    else:
        raise PrometheusError(f"unexpected resultType {kind!r}")
    if not isinstance(sample, list) or len(sample) != 2:
        raise PrometheusError(f"malformed sample {sample!r}")
    try:
        value = float(sample[1])
    except (TypeError, ValueError):
        raise PrometheusError(f"malformed sample value {sample[1]!r}") from None
    return value if math.isfinite(value) and value >= 0 else None


def _get_json(url: str, timeout: float) -> object:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        # Prometheus answers 400/422/503 with the same JSON error body.
        try:
            return json.loads(error.read())
        except ValueError:
            raise PrometheusError(f"HTTP {error.code} from {url}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise PrometheusError(f"cannot reach {url}: {error}") from None
    except ValueError:
        raise PrometheusError(f"{url} did not answer JSON") from None


async def query_value(base_url: str, query: str, timeout: float) -> float | None:
    """Run one instant query; PrometheusError when it cannot be answered."""
    url = instant_query_url(base_url, query)
    payload = await asyncio.to_thread(_get_json, url, timeout)
    return parse_instant_value(payload)


async def inference_rate(
    base_url: str, source: PrometheusSource, namespace: str, deployment: str, timeout: float
) -> float | None:
    """Inferences per second served by the Deployment's pods over the last 5 minutes."""
    return await query_value(base_url, source.inference_rate(namespace, deployment), timeout)
