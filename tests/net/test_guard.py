"""The address guard both HTTP clients resolve through (`net/guard.py`)."""

from __future__ import annotations

import pytest

from skyfill.net.exceptions import PrivateNetworkRefused
from skyfill.net.guard import check_host, public_only


def test_a_names_private_answers_are_dropped_and_none_left_is_a_refusal() -> None:
    answers = ["10.1.2.3", "93.184.216.34", "::1", "::ffff:192.168.0.1", "2606:4700::1"]
    assert public_only("pds.example", answers, str) == ["93.184.216.34", "2606:4700::1"]
    rows = [{"host": "169.254.169.254"}, {"host": "127.0.0.1"}]
    with pytest.raises(PrivateNetworkRefused, match=r"refused pds\.example"):
        public_only("pds.example", rows, lambda row: row["host"])


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost", "pds.localhost", "10.0.0.7"])
def test_literal_private_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(PrivateNetworkRefused, match="--allow-private-network"):
        check_host(host, allow_private=False)
    check_host(host, allow_private=True)
    check_host("pds.example.com", allow_private=False)
