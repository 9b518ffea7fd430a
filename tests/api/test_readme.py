"""The README's "From Python" examples, run as they stand against the simulated network.

The fenced ```python blocks of that section run in order, in one namespace, in a directory
holding the network's files as `simnet-out/` (as the README starts the network), with one
substitution: the line `PLC_URL = "..."` gets the network's PLC URL. What they compute is
then checked against the network's ground truth."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.api.conftest import network_dir, statuses, stored_records
from tests.helpers import Server

README = Path(__file__).resolve().parents[2] / "README.md"
PLC_LINE = re.compile(r'^PLC_URL = "[^"]*"', re.MULTILINE)


def python_blocks() -> list[str]:
    """The ```python blocks of the README's "From Python" section, in order."""
    section = README.read_text().split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def run_examples(net: Server) -> dict:
    blocks = python_blocks()
    first = blocks[0]
    assert len(PLC_LINE.findall(first)) == 1, "the first block sets PLC_URL once"
    blocks[0] = PLC_LINE.sub(f'PLC_URL = "{net.ready["plc"]}"', first)
    namespace: dict = {"__name__": "__main__"}
    for number, block in enumerate(blocks):
        exec(compile(block, f"README.md From Python block {number + 1}", "exec"), namespace)
    return namespace


def test_the_readme_examples_compute_the_networks_truth(
    apinet: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(network_dir(apinet))
    assert len(python_blocks()) == 4
    ns = run_examples(apinet)
    stored = stored_records(apinet)
    everything = [(did, path, rec) for did, recs in stored.items() for path, rec in recs.items()]

    summary = ns["summary"]
    assert summary.status == "completed" and summary.job_id == "from-python"
    assert summary.counts == statuses(apinet) and ns["ok_dids"] == statuses(apinet)["ok"]
    assert summary.records == len(everything)
    assert ns["records"].count_rows() == len(everything)
    assert ns["repos"].count_rows() == sum(statuses(apinet).values())
    assert ns["dids_per_status"] == statuses(apinet)

    posts = Counter(
        datetime.fromisoformat(rec["createdAt"]).date()
        for _, path, rec in everything
        if path.startswith("app.bsky.feed.post/")
    )
    assert ns["posts_per_day"] == sorted(posts.items()) and len(posts) > 10

    likes = [rec["subject"]["uri"] for _, path, rec in everything if "feed.like/" in path]
    liked = Counter(likes)
    top = sorted(liked.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert ns["top_liked_posts"] == top and len(top) == 10

    accounts = Counter(uri.split("/")[2] for uri in likes)
    most = sorted(accounts.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert ns["most_liked_accounts"] == most and most[0][1] > 1
