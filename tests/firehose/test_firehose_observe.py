"""Seeing a stream and bounding what it takes: JSON progress lines, Prometheus metrics
while it runs, `--dids` and `--collections` filters, and the `--background` preset."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.firehose.recording import ServedRecording
from tests.helpers import free_port, json_lines, run_cli, start_cli


def base(served: ServedRecording, workdir: Path, sink: str) -> list[str]:
    return [
        "firehose", "--from-host", served.host_url, "--sink", sink, "--workdir", str(workdir),
        "--plc-url", served.plc_url, "--allow-private-network", "--since", "all",
    ]  # fmt: skip


def test_progress_lines_and_metrics_while_it_runs(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    port = free_port()
    command = [
        *base(fh_served, tmp_path / "w", f"sqlite:///{tmp_path / 'x.db'}"),
        "--until-live", "--progress", "log", "--progress-interval", "0.2",
        "--metrics-port", str(port), "--batch-size", "100", "--batch-delay", "0.05",
    ]  # fmt: skip
    scraped: list[str] = []

    def scrape() -> None:
        while process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except (OSError, http.client.HTTPException):  # the run ended mid-answer
                continue
            if "skyfill_firehose_received" in text:
                scraped.append(text)

    process = start_cli(*command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    scraper.join(5)
    assert process.returncode == 0, err
    lines = [line for line in json_lines(err) if line.get("event") == "firehose_progress"]
    assert len(lines) >= 2
    for name in ("received", "applied", "skipped", "events_per_s", "lag_s", "lag_seqs",
                 "cursor", "rss_bytes", "desynchronized_repos"):  # fmt: skip
        assert name in lines[-1], name
    assert lines[-1]["received"] >= lines[0]["received"]
    assert scraped, "no metrics were served while the stream ran"
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(scraped[-1])
        for s in family.samples
    }
    assert samples["skyfill_firehose_received_total"] > 0
    assert "skyfill_firehose_lag_seqs" in samples and "skyfill_firehose_cursor" in samples


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "unverified"])
def test_dids_and_collections_filters(
    fh_served: ServedRecording, tmp_path: Path, verify: bool
) -> None:
    """Verified (decode workers) and not (split over shards by default: the filters
    apply in each shard)."""
    truth = fh_served.truth["repos"]
    ok = sorted(did for did, repo in truth.items() if repo["status"] == "ok")
    chosen = ok[:5]
    (tmp_path / "dids.txt").write_text("\n".join(chosen) + "\n")
    db = tmp_path / "f.db"
    done = run_cli(
        *base(fh_served, tmp_path / "w", f"sqlite:///{db}"), "--until-live", "--progress",
        "none", "--dids", str(tmp_path / "dids.txt"), "--collections", "app.bsky.feed.like",
        *([] if verify else ["--no-verify-signatures"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        got = set(conn.execute("SELECT did, collection || '/' || rkey, cid FROM records"))
        repos = {did for (did,) in conn.execute("SELECT did FROM repos")}
    want = {
        (did, r["path"], r["cid"])
        for did in chosen
        for r in truth[did]["records"]
        if r["path"].startswith("app.bsky.feed.like/")
    }
    assert want and got == want
    assert repos <= set(chosen)


def test_background_preset_takes_the_appview_throttles(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    done = run_cli(
        *base(fh_served, tmp_path / "w", f"sqlite:///{tmp_path / 'b.db'}"), "--background",
        "--batch-size", "7", "--duration", "1", "--progress", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (manifest,) = (tmp_path / "w" / "streams").glob("*/stream.json")
    config = json.loads(manifest.read_text())["config"]
    assert config["batch_size"] == 7  # given explicitly: wins over the preset
    assert config["batch_delay"] == 2.0 and config["max_concurrent"] == 2
    assert config["max_memory"] == 512 << 20
    assert " stopped: " in done.stdout  # --duration ended it before the head
