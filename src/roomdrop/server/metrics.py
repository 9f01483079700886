"""The server's Prometheus metrics, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge("roomdrop_connections", "Open WebSockets", registry=self.registry)
        self.rooms = Gauge("roomdrop_rooms", "Rooms with a participant", registry=self.registry)
        self.transfers = Gauge(
            "roomdrop_transfers", "Transfers by status", ["status"], registry=self.registry
        )
        self.relayed = Counter(
            "roomdrop_relayed_bytes", "Chunk bytes relayed to receivers", registry=self.registry
        )
        self.staged = Counter(
            "roomdrop_relay_staged_chunks",
            "Relayed chunks that waited in the encrypted staging (the receiver was behind)",
            registry=self.registry,
        )
        self.messages = Counter(
            "roomdrop_messages", "Control messages handled", ["type"], registry=self.registry
        )
        self.refused = Counter(
            "roomdrop_refused", "Requests refused", ["code"], registry=self.registry
        )
