"""The simulated relay's listHosts (simnet.relay) and the scheme skyfill gives its hosts."""

from __future__ import annotations

import pytest

from skyfill.backfill.relays import host_url
from skyfill.simnet.relay import RelayHost, RelayOptions, list_hosts

HOSTS = [RelayHost(f"localhost:{1000 + i}", "active", i, 1000 + i) for i in range(5)]


def test_list_hosts_pages_with_a_cursor_until_a_short_page() -> None:
    options = RelayOptions()
    status, first = list_hosts(HOSTS, options, None, "2")
    assert status == 200 and isinstance(first, dict)
    assert [h["hostname"] for h in first["hosts"]] == ["localhost:1000", "localhost:1001"]
    assert first["cursor"] == "2"
    _, last = list_hosts(HOSTS, options, "4", "2")
    assert isinstance(last, dict) and len(last["hosts"]) == 1 and "cursor" not in last
    _, clamped = list_hosts(HOSTS, options, None, "5000")  # 1..1000
    assert isinstance(clamped, dict) and len(clamped["hosts"]) == 5
    assert list_hosts(HOSTS, options, "x", None)[0] == 400


def test_relay_faults_and_options_are_checked() -> None:
    assert list_hosts(HOSTS, RelayOptions(fault="not_json"), None, None)[1].startswith("<html>")
    assert list_hosts(HOSTS, RelayOptions(fault="no_hosts_list"), None, None)[1] == {
        "hosts": "none"
    }
    with pytest.raises(ValueError, match="unknown status"):
        RelayOptions(statuses={0: "gone"})


@pytest.mark.parametrize(
    ("relay", "allow_private", "url"),
    [
        ("https://relay.example", False, "https://pds.example"),
        ("https://relay.example", True, "https://pds.example"),
        ("http://127.0.0.1:2470", False, "https://pds.example"),
        ("http://127.0.0.1:2470", True, "http://pds.example"),
    ],
)
def test_hosts_are_https_unless_a_plain_relay_on_a_private_network(
    relay: str, allow_private: bool, url: str
) -> None:
    assert host_url("pds.example", relay, allow_private) == url
