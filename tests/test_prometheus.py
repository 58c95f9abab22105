"""Inference rates from Prometheus (operator/prometheus.py): the answer parsing, table-driven,
and the HTTP edge against a small Prometheus-API server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from optimodel.operator.autoscaling import PrometheusSource
from optimodel.operator.prometheus import (
    PrometheusError,
    inference_rate,
    instant_query_url,
    parse_instant_value,
    query_value,
)


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {}, "value": [1767225600.0, value]} for value in values],
        },
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (vector("12.5"), 12.5),
        (vector("0"), 0.0),
        (vector(), None),  # no series: no Triton pod scraped yet
        (vector("NaN"), None),
        (vector("-1"), None),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0),
    ],
)
def test_instant_answers(payload: dict[str, Any], expected: float | None) -> None:
    assert parse_instant_value(payload) == expected


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data"),
        (vector("1", "2"), "expected one series, got 2"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{}]}}, "malformed"),
        (vector("many"), "malformed sample value"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_unusable_answers_raise(payload: object, fragment: str) -> None:
    with pytest.raises(PrometheusError, match=fragment):
        parse_instant_value(payload)


def test_the_query_sums_triton_counters_over_the_deployments_pods() -> None:
    query = PrometheusSource().inference_rate("ml", "minilm")
    assert query == (
        'sum(rate(nv_inference_count{namespace="ml",pod=~"minilm-[a-z0-9]+-[a-z0-9]+"}[5m]))'
    )
    url = urlparse(instant_query_url("http://prom:9090/", query))
    assert (url.netloc, url.path) == ("prom:9090", "/api/v1/query")
    assert parse_qs(url.query)["query"] == [query]


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus; `server.answers` maps a query to (code, body)."""

    server: PrometheusServer

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query).get("query", [""])[0]
        self.server.queries.append(query)
        if self.server.delay:
            time.sleep(self.server.delay)  # a slow Prometheus, for the client's timeout
        code, body = self.server.answers.get(query, (200, vector()))
        data = json.dumps(body).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def log_message(self, *_: Any) -> None:
        pass


class PrometheusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakePrometheus)
        self.answers: dict[str, tuple[int, Any]] = {}
        self.queries: list[str] = []
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


async def test_inference_rate_from_a_prometheus_server(prometheus: PrometheusServer) -> None:
    source = PrometheusSource()
    prometheus.answers[source.inference_rate("ml", "minilm")] = (200, vector("42.5"))
    rate = await inference_rate(prometheus.url, source, "ml", "minilm", timeout=5)
    assert rate == 42.5
    assert prometheus.queries == [source.inference_rate("ml", "minilm")]


async def test_a_refused_query_names_prometheus_error(prometheus: PrometheusServer) -> None:
    answer = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}
    prometheus.answers["sum(("] = (400, answer)
    with pytest.raises(PrometheusError, match="bad_data: 1:5: parse error"):
        await query_value(prometheus.url, "sum((", timeout=5)


async def test_a_slow_prometheus_times_out(prometheus: PrometheusServer) -> None:
    prometheus.delay = 1.0
    started = time.monotonic()
    with pytest.raises(PrometheusError, match="cannot reach"):
        await query_value(prometheus.url, "up", timeout=0.2)
    assert time.monotonic() - started < 0.9


async def test_an_unreachable_prometheus_is_an_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PrometheusError, match="cannot reach"):
        await query_value(f"http://127.0.0.1:{port}", "up", timeout=2)
