"""The advertised-address rule and the peer-address rule (net/addresses.py): pure functions."""

from __future__ import annotations

from collab_tui.net.addresses import advertised_hosts, interface_ipv4s, join_hostport, peer_address, split_hostport


def test_listening_on_every_address_advertises_every_interface_address_but_loopback():
    assert advertised_hosts("0.0.0.0", "", interfaces=["10.0.0.5", "192.168.1.7"]) == ["10.0.0.5", "192.168.1.7"]
    assert advertised_hosts("", "", interfaces=["10.0.0.5"]) == ["10.0.0.5"]


def test_loopback_only_when_the_machine_has_no_other_address_or_listens_there():
    assert advertised_hosts("0.0.0.0", "", interfaces=[]) == ["127.0.0.1"]
    assert advertised_hosts("127.0.0.1", "", interfaces=["10.0.0.5"]) == ["127.0.0.1"]


def test_an_explicit_advertise_or_listen_address_wins():
    assert advertised_hosts("0.0.0.0", "alpha.lan", interfaces=["10.0.0.5"]) == ["alpha.lan"]
    assert advertised_hosts("10.0.0.9", "", interfaces=["10.0.0.5"]) == ["10.0.0.9"]


def test_interface_addresses_exclude_loopback_and_link_local():
    for ip in interface_ipv4s():
        assert not ip.startswith("127.") and not ip.startswith("169.254.")


def test_a_peer_is_recorded_at_its_stated_address_unless_it_claims_loopback_from_afar():
    assert peer_address("10.0.0.5:7373", "10.0.0.5") == "10.0.0.5:7373"
    assert peer_address("127.0.0.1:7373", "10.0.0.5") == "10.0.0.5:7373"  # misconfigured or old peer
    assert peer_address("0.0.0.0:7373", "10.0.0.5") == "10.0.0.5:7373"
    assert peer_address("127.0.0.1:4000", "127.0.0.1") == "127.0.0.1:4000"
    assert peer_address("alpha.lan:7373", "10.0.0.5") == "alpha.lan:7373"  # an explicit advertise


def test_host_port_round_trip():
    assert split_hostport(join_hostport("10.0.0.5", 7373)) == ("10.0.0.5", 7373)
    assert split_hostport(join_hostport("fd00::2", 7373)) == ("fd00::2", 7373)
    assert split_hostport("nohost") is None and split_hostport("h:0") is None and split_hostport("h:x") is None
