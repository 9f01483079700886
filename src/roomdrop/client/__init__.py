"""The roomdrop client: join a room, send and receive files peer to peer over a WebRTC
data channel (aiortc) or through the server's relay, verified and resumable.

* :mod:`.settings` — ``ROOMDROP_*`` client settings and the user id in a token;
* :mod:`.signalling` — the server's WebSocket (websockets), with reconnect, backoff and
  failover to the next of several servers;
* :mod:`.rtc` — one peer connection and data channel per remote user (aiortc);
* :mod:`.http` — the server's REST endpoints the client needs (httpx);
* :mod:`.session` — what a participant does: offers, accepts, chunks, resume;
* :mod:`.display` — progress bars (rich) or JSON lines.
"""
