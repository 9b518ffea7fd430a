"""Fetch processes split the hosts' limits: N children together keep what one process
would (`BackfillConfig.limit_settings(share=N)`)."""

from __future__ import annotations

import pytest

from skyfill.backfill.config import BackfillConfig


@pytest.mark.parametrize("share", [1, 2, 3, 8])
def test_children_together_keep_the_limits_of_one_process(share: int) -> None:
    config = BackfillConfig(
        job_id="j",
        dids_file="dids.txt",
        rate_limit="3000/5m",
        hosts={"pds.example.com": "100/1m"},
        concurrency=32,
        host_concurrency=8,
    )
    whole, part = config.limit_settings(), config.limit_settings(share=share)
    assert part.default_rate.per_second * share == pytest.approx(whole.default_rate.per_second)
    assert part.default_rate.requests == whole.default_rate.requests  # the same burst
    host = "pds.example.com"
    assert part.host_rates[host].per_second * share == pytest.approx(
        whole.host_rates[host].per_second
    )
    assert part.global_concurrency * share <= whole.global_concurrency
    assert part.host_concurrency >= 1 and part.host_concurrency * share <= max(
        whole.host_concurrency, share
    )
    assert part.adaptive == whole.adaptive
