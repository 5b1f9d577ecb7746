"""Broker provisioning helpers that need no broker."""

from __future__ import annotations

import base64

from runstream.deploy import brokers


def test_cluster_ids_never_start_with_a_dash(monkeypatch) -> None:
    # Kafka's storage tool reads "-..." as an option: one random id in 64 broke a start.
    dashed, plain = b"\xfb" + bytes(15), bytes(16)
    assert base64.urlsafe_b64encode(dashed).decode().startswith("-")
    draws = iter([dashed, dashed, plain])

    class FakeUuid:
        def __init__(self) -> None:
            self.bytes = next(draws)

    monkeypatch.setattr(brokers.uuid, "uuid4", FakeUuid)
    cluster_id = brokers.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain).decode().rstrip("=")
    assert len(cluster_id) == 22
