"""``function.metrics`` on its own: bounded labels, one registry per instance, both formats."""

from __future__ import annotations

import threading

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from function.metrics import STAGES, BoundedLabel, Metrics


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in parse_text(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_bounded_label_names_the_first_values_then_says_other() -> None:
    label = BoundedLabel(3)
    assert [label(v) for v in ("a", "b", "a", "c")] == ["a", "b", "a", "c"]
    assert label("d") == BoundedLabel.OTHER
    assert label("e") == "other"
    # Values seen before the limit keep their own name for good.
    assert label("b") == "b" and label("c") == "c"


def test_bounded_label_holds_its_limit_under_concurrent_newcomers() -> None:
    label = BoundedLabel(10)
    named: list[str] = []
    lock = threading.Lock()

    def sender(offset: int) -> None:
        for i in range(50):
            value = label(f"s{offset}-{i}")
            with lock:
                named.append(value)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(named) == 400
    assert len(set(named) - {"other"}) == 10
    assert named.count("other") == 390


def test_event_counter_cardinality_is_bounded() -> None:
    metrics = Metrics()
    for n in range(100):
        metrics.event(f"type-{n}", f"/source/{n}", "ok").inc()
    text, _ = metrics.render("text/plain")
    samples = [
        s
        for family in parse_text(text.decode())
        for s in family.samples
        if s.name == "nsfwoid_events_total"
    ]
    assert sum(s.value for s in samples) == 100  # nothing lost, only folded into "other"
    assert len({s.labels["type"] for s in samples}) == 16 + 1
    assert len({s.labels["source"] for s in samples}) <= 64 + 1
    assert sample(text.decode(), "nsfwoid_events_total", type="other", source="other") == 36


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # no "Duplicated timeseries" error: no global registry
    first.requests.labels("raw", "ok").inc(3)
    one = first.render("text/plain")[0].decode()
    two = second.render("text/plain")[0].decode()
    assert sample(one, "nsfwoid_requests_total", input="raw", outcome="ok") == 3
    assert sample(two, "nsfwoid_requests_total", input="raw", outcome="ok") is None


def test_prometheus_text_format_by_default() -> None:
    metrics = Metrics()
    for stage in STAGES:
        metrics.stage_seconds.labels(stage).observe(0.02)
    metrics.rejected.labels("overloaded").inc()
    body, content_type = metrics.render("*/*")
    text = body.decode()
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    for stage in STAGES:
        assert sample(text, "nsfwoid_stage_seconds_count", stage=stage) == 1
        assert sample(text, "nsfwoid_stage_seconds_bucket", stage=stage, le="0.025") == 1
        assert sample(text, "nsfwoid_stage_seconds_bucket", stage=stage, le="0.01") == 0
    assert sample(text, "nsfwoid_rejected_requests_total", reason="overloaded") == 1
    assert "_created" not in text  # disabled: they double the exposition for nothing
    assert sample(text, "process_cpu_seconds_total") is not None  # the process collectors
    assert sample(text, "python_info") == 1


def test_openmetrics_when_asked() -> None:
    metrics = Metrics()
    metrics.requests.labels("json", "ok").inc(2)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    families = {family.name: family for family in parse_om(text)}
    values = [s.value for s in families["nsfwoid_requests"].samples if s.name.endswith("_total")]
    assert values == [2]
