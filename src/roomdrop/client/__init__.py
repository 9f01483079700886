"""The roomdrop client: join a room, send and receive files peer to peer over a WebRTC
data channel (aiortc) or through the server's relay, verified and resumable.

* :mod:`.settings` — ``ROOMDROP_*`` client settings and the user id in a token;
* :mod:`.signalling` — the server's WebSocket (websockets), with reconnect, backoff and
  failover to the next of several servers;
* :mod:`.rtc` — one peer connection and data channel per remote user (aiortc);
* :mod:`.http` — the server's REST endpoints the client needs (httpx);
* :mod:`.session` — one participant in one room: connects, dispatches every message
  to the role it concerns, ticks;
* :mod:`.outgoing` — the sender: offer, take up, the pump, choosing the transport;
* :mod:`.incoming` — the receiver: offers considered, chunks in, completion, resume;
* :mod:`.links` — peer links (one data channel per remote participant);
* :mod:`.catchup` — aligning both roles with the server's ``room-state``;
* :mod:`.transfers` — what the roles share: a transfer's bookkeeping and result;
* :mod:`.display` — progress bars (rich) or JSON lines;
* :mod:`.output` — an output whose reader went away (EPIPE): silenced, the command ends.
"""
