"""knative/wikimedia-uploads.yaml: each document against its CRD in ../shared/knative, strictly
(unknown keys rejected as the API server's strict field validation does), and the route it
describes: Kafka recentchange → Broker → nsfwoid → score and failure topics, with dead letters."""

from __future__ import annotations

from typing import Any

import pytest

from function.config import Settings
from tests.test_knative_manifests import (  # noqa: F401 (crd_schemas is a fixture)
    KNATIVE,
    crd_schemas,
    load_all,
    schema_problems,
    trigger_rule_problems,
    unknown_fields,
)

MANIFEST = KNATIVE / "wikimedia-uploads.yaml"
KAFKA_SINK = ("eventing.knative.dev/v1alpha1", "KafkaSink")


def docs() -> list[dict[str, Any]]:
    return load_all(MANIFEST)


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs() if d["kind"] == kind}


def test_every_document_matches_its_crd_strictly(crd_schemas: Any) -> None:  # noqa: F811
    kinds = [d["kind"] for d in docs()]
    assert sorted(set(kinds)) == ["Broker", "KafkaSink", "KafkaSource", "Trigger"]
    for doc in docs():
        assert schema_problems(doc, crd_schemas) == [], doc["metadata"]["name"]


def test_the_strict_check_catches_a_misspelt_key(crd_schemas: Any) -> None:  # noqa: F811
    source = next(iter(by_kind("KafkaSource").values()))
    source["spec"]["topic"] = source["spec"].pop("topics")  # KafkaSink's word, not KafkaSource's
    problems = schema_problems(source, crd_schemas)
    assert any("topic: unknown field" in p for p in problems), problems
    sink = next(iter(by_kind("KafkaSink").values()))
    sink["spec"]["contentMode"] = "json"
    assert schema_problems(sink, crd_schemas)
    schema = crd_schemas[KAFKA_SINK]
    assert list(unknown_fields({"spec": {"topic": "t", "partitions": 3}}, schema))


def test_triggers_follow_the_webhook_rules() -> None:
    for trigger in by_kind("Trigger").values():
        assert trigger_rule_problems(trigger) == [], trigger["metadata"]["name"]


def test_the_route_from_recentchange_to_the_score_topics() -> None:
    (source,) = by_kind("KafkaSource").values()
    brokers = by_kind("Broker")
    triggers = {t["spec"]["filter"]["attributes"]["type"]: t for t in by_kind("Trigger").values()}
    sinks = by_kind("KafkaSink")

    spec = source["spec"]
    assert spec["topics"] == ["eqiad.mediawiki.recentchange", "codfw.mediawiki.recentchange"]
    assert spec["sink"]["ref"]["kind"] == "Broker" and spec["sink"]["ref"]["name"] in brokers

    score = triggers["dev.knative.kafka.event"]["spec"]  # the type a KafkaSource gives records
    assert score["broker"] == spec["sink"]["ref"]["name"]
    assert score["subscriber"]["ref"] == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "name": "nsfwoid",
    }
    delivery = score["delivery"]
    assert delivery["backoffPolicy"] == "exponential"
    # Retries span minutes: an upload's file can take that long to be served everywhere.
    seconds = int(delivery["backoffDelay"].removeprefix("PT").removesuffix("S"))
    assert sum(seconds * 2**n for n in range(delivery["retry"])) >= 300
    assert delivery["deadLetterSink"]["ref"]["name"] in sinks

    settings = Settings()
    for reply_type, topic in (
        (settings.event_type, "nsfwoid.image_scored.v1"),
        (settings.failed_event_type, "nsfwoid.image_failed.v1"),
    ):
        store = triggers[reply_type]["spec"]
        ref = store["subscriber"]["ref"]
        assert (ref["apiVersion"], ref["kind"]) == KAFKA_SINK
        assert sinks[ref["name"]]["spec"]["topic"] == topic
        # The value of each record is the event's data, an Event Platform event.
        assert sinks[ref["name"]]["spec"]["contentMode"] == "binary"
        assert store["delivery"]["deadLetterSink"]["ref"]["name"] in sinks
    # No loop: nsfwoid's replies are not what the scoring trigger selects.
    assert "dev.knative.kafka.event" not in (settings.event_type, settings.failed_event_type)


@pytest.mark.parametrize("name", ["nsfwoid-image-scored", "nsfwoid-image-failed"])
def test_sink_topics_are_the_event_streams_of_the_schemas(name: str) -> None:
    from function.wikimedia import scored

    topic = by_kind("KafkaSink")[name]["spec"]["topic"]
    assert topic in (scored.SCORED_STREAM, scored.FAILED_STREAM)
