"""WebRTC data channels to other participants (aiortc).

One :class:`PeerLink` per remote user: an ``RTCPeerConnection`` with one reliable,
ordered data channel labelled ``roomdrop`` that carries binary frames (docs/protocol.md
§3.3, each at most 65,536 bytes). The side with something to send makes the offer; the
SDP goes through the server's WebSocket as ``offer``/``answer`` signalling.

Candidates: the host candidates go in the SDP at once. With STUN or TURN servers the
rest are gathered in the background (:class:`~.gathering.Gathering`): those found within
``ROOMDROP_ICE_GATHER_WAIT`` go in the SDP too, later ones follow as ``ice-candidate``
messages, then an ``ice-candidate`` with an empty ``candidate`` (end of candidates). So
a TURN server that does not answer no longer holds up a connection the host candidates
can make. Candidates that arrive (from a trickling peer, e.g. a browser) are added; the
remote end of candidates is passed on only once this side's own gathering is over, so
ICE does not give up before a late relay candidate of ours had its chance.

This package is the only code that imports ``aiortc`` and ``aioice``: :mod:`.link`
(the peer connection and its channel) and :mod:`.gathering` (its ICE candidates).
"""

from __future__ import annotations

from roomdrop.client.rtc.gathering import host_addresses, pin_ice_hosts
from roomdrop.client.rtc.link import LABEL, PeerLink

__all__ = ["LABEL", "PeerLink", "host_addresses", "pin_ice_hosts"]
