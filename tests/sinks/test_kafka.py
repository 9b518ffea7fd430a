"""The Kafka sink through the CLI, on a real Kafka-protocol broker (tests/kafkabroker.py):
`skyfill run` against the simulated network publishes every record and every repos row,
read back equal to the network's truth, also when the run is killed after the broker
acknowledged and before the job knew (resume publishes again: duplicates, nothing lost);
a bad URL or an unreachable broker is one line and a non-zero exit."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from skyfill.engine.schemas import schema
from skyfill.sinks.exceptions import SinkUrlError
from skyfill.sinks.factory import parse_sink_url
from tests.helpers import (
    Server,
    assert_one_line_error,
    free_port,
    job_dir,
    run_cli,
    run_job,
    truth_records,
)
from tests.kafkabroker import KafkaBroker, Received, fold, read_topic


def records_by_did(messages: dict[bytes, Received]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for m in messages.values():
        row = m.json()
        out.setdefault(row["did"], set()).add((f"{row['collection']}/{row['rkey']}", row["cid"]))
    return out


def test_run_into_kafka_equals_the_truth_also_after_a_kill_once_published(
    simnet: Server, kafka: KafkaBroker, tmp_path: Path
) -> None:
    topic = kafka.topic("backfill")
    sink = kafka.url(topic)
    killed = run_job(
        simnet, tmp_path, "k1", "--sink", sink, env={"SKYFILL_FAILPOINT": "kafka_published"}
    )
    assert killed.returncode == -9, killed.stderr  # after the acknowledgement, before "done"
    done = run_cli("resume", "k1", "--workdir", str(tmp_path), "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert "published:" in done.stdout and "acknowledged by the broker" in done.stdout

    truth = simnet.ready["truth_data"]
    messages = read_topic(kafka.bootstrap, topic)
    records = fold(messages)
    want = {did: recs for did, recs in truth_records(truth).items() if recs}
    assert records_by_did(records) == want
    # the killed run's messages are there twice: duplicates, keyed as the first ones
    copies = Counter(m.key for m in messages)
    assert len(messages) == 2 * len(records) and set(copies.values()) == {2}

    one = next(iter(records.values()))
    row = one.json()
    assert one.key == f"at://{row['did']}/{row['collection']}/{row['rkey']}".encode()
    assert one.headers == {"did": row["did"], "rev": row["rev"], "op": "create"}
    assert row["uri"] == one.key.decode() and row["job_id"] == "k1"
    assert row["record"]["$type"] == row["collection"]  # the record itself, nested

    repos = {
        m.key.decode(): m.json()
        for m in fold(read_topic(kafka.bootstrap, f"{topic}.repos")).values()
    }
    dids = Path(simnet.ready["dids"]).read_text().split()
    assert sorted(repos) == sorted(dids)
    for did, repo in truth["repos"].items():
        expected = {"tombstoned": "deleted"}.get(repo["status"], repo["status"])
        assert repos[did]["status"] == expected, (did, repos[did])
        if expected == "ok":
            assert repos[did]["rev"] == repo["rev"]
            assert repos[did]["record_count"] == len(repo["records"])

    manifest = json.loads((job_dir(tmp_path, "k1") / "aggregation" / "manifest.json").read_text())
    assert manifest["sink"]["kind"] == "kafka"
    assert manifest["sink"]["published"] == {"records": len(records), "repos": len(dids)}
    job_manifest = json.loads((job_dir(tmp_path, "k1") / "manifest.json").read_text())
    assert job_manifest["config"]["sink"].startswith(f"kafka://{kafka.bootstrap}/{topic}?")
    for name, document in (("aggregation", manifest), ("job", job_manifest)):
        errors = list(Draft202012Validator(schema(name)).iter_errors(document))
        assert errors == [], (name, [e.message for e in errors])


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("kafka://127.0.0.1/t", "is not host:port"),
        ("kafka://127.0.0.1:9092/", "names no valid topic"),
        ("kafka://127.0.0.1:9092/t?compression=brotli", "compression must be one of"),
        ("kafka://127.0.0.1:9092/t?idempotence=maybe", "idempotence must be true or false"),
        ("kafka://127.0.0.1:9092/t?acks=1", "unknown option 'acks'"),
        ("kafka://u:secret@127.0.0.1:9092/t", "takes no credentials"),
        ("kafka://127.0.0.1:9092/t?repos_topic=t", "repos_topic must be"),
    ],
)
def test_bad_kafka_urls_are_refused_in_one_line(url: str, needle: str) -> None:
    with pytest.raises(SinkUrlError, match=needle) as refused:
        parse_sink_url(url)
    assert "\n" not in str(refused.value) and "secret" not in str(refused.value)


def test_a_bad_url_or_an_unreachable_broker_is_one_line(
    simnet: Server, kafka: KafkaBroker, tmp_path: Path
) -> None:
    bad = run_job(simnet, tmp_path, "b1", "--sink", "kafka://127.0.0.1/topic")
    assert_one_line_error(bad, 2, "is not host:port")
    nowhere = f"kafka://127.0.0.1:{free_port()}/topic?idempotence=false"
    unreachable = run_job(simnet, tmp_path, "b2", "--sink", nowhere)
    assert_one_line_error(unreachable, 1, "KafkaConnectionError")
    assert not (job_dir(tmp_path, "b2") / "tasks").exists()  # refused before any fetch
    idempotent_url = kafka.url(kafka.topic("refused"), idempotence="true")
    idempotent = run_job(simnet, tmp_path, "b3", "--sink", idempotent_url)
    assert_one_line_error(idempotent, 1, "idempotence=false")
    stream = run_cli(
        "firehose", "--from-host", "http://127.0.0.1:9", "--sink", nowhere,
        "--workdir", str(tmp_path / "work"), "--progress", "none",
    )  # fmt: skip
    assert_one_line_error(stream, 1, "KafkaConnectionError")
