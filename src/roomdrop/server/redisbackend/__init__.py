"""The shared backend: several ``roomdrop serve`` instances share rooms through Redis.

This package is the only code that imports ``redis``: :mod:`.backend` (the
:class:`RedisBackend` the hub talks to: its lifecycle, and each call handed to the part
that owns it), :mod:`.records` (transfer records), :mod:`.presence` (rooms, grace
windows, delivery to participants), :mod:`.relayqueue` (frames between instances, the
rooms' bandwidth), :mod:`.bus` (the subscription and the writer) and :mod:`.common`
(key names, errors). Every key and channel starts with the
deployment's prefix ``P`` (``ROOMDROP_REDIS_PREFIX``, default ``roomdrop``)::

    P:t:{tid}            hash   a transfer record: rec (JSON), status, and the progress
                                fields chunks, bytes, activity (epoch s), speed (B/s)
    P:live               set    live transfer ids (the sweeper's work list)
    P:live:u:{user}      set    live transfers a user is a party to (the per-user limit)
    P:live:r:{room}      set    live transfers of a room (the per-room limit)
    P:all:u:{user}       set    every transfer of a user (GET /file-transfers)
    P:recent             zset   every transfer id, by creation time (metrics)
    P:dp                 set    transfers paused because a party dropped
    P:stored             set    transfers kept in the store for their receiver (neither
                                live nor ended: swept for ROOMDROP_STORE_TTL)
    P:m:{room}           hash   user -> "{instance}/{connection}": who is in the room
    P:k:{room}           hash   user -> device public key, of those in the room who
                                published one (it leaves with them)
    P:seen:{room}        hash   user -> {"key": device key or null, "at": epoch s}: who
                                has been in the room, kept for ROOMDROP_STORE_TTL (whom
                                a file may be kept for); the hash expires that long
                                after its last write, old entries go when it is read
    P:g                  zset   ["room", "user"] -> end of their grace window (epoch s)
    P:i:{instance}       string an instance's heartbeat (expires after INSTANCE_TIMEOUT)
    P:i:{instance}:m     set    ["room", "user"] of the participants it hosts
    P:insts              set    instances known to be running
    P:q:{tid}            list   relayed frames on their way to the receiver's instance
    P:bw:{room}          hash   the room's relay token bucket (tokens, ts)
    P:secret             string the JWT secret, when ROOMDROP_SECRET is not set
    P:sweep              string which instance sweeps this second

    channel P:u:{room}:{user}  a participant's messages; the instance that hosts them
                               subscribes: {"k": "m", "t": json} a message, {"k":
                               "kick", "c": conn} a newer connection joined, {"k":
                               "relay", "tid": tid} frames wait in P:q:{tid}
    channel P:r:{room}         room broadcasts {"o": origin, "x": exclude, "t": json}
    channel P:changed          {"o": origin, "tid": tid}: a record's status changed

Atomicity: a status change reads the record under ``WATCH`` and writes it in
``MULTI``/``EXEC`` (retrying if another instance changed it meanwhile), so the state
table decides every change exactly once; an offer counts the live sets under the same
``WATCH``, so the limits hold across instances. Joining, leaving, claiming ended grace
windows, taking over a vanished instance's participants, progress writes (only while
the transfer is active) and the room's token bucket are Lua scripts.

The relay between instances: the sender's instance checks a chunk and pushes its whole
frame onto ``P:q:{tid}``: a sealed frame of an end-to-end encrypted transfer as it is
(ciphertext under a key only the two devices hold), a frame in the clear encrypted with
AES-GCM under a key derived from the server secret and the transfer id (HKDF-SHA256,
:class:`~roomdrop.server.staging.FrameSeal`, behind a zero byte; no key is stored
anywhere), so Redis never holds a chunk in the clear. It pushes (with the record's
status read in the same ``MULTI``: a transfer no longer active has its queue dropped)
only while fewer than ``QUEUE_FRAMES`` wait there (else it waits:
back-pressure to the sender's socket). Pushing onto an empty queue announces the frames
on the receiver's channel (at most every ``ANNOUNCE_EVERY``); the instance hosting the
receiver pops them (``BLMPOP``), decrypts those it sealed (and takes the others only if
they are sealed frames of that transfer) and sends them as the receiver's socket takes
them. Memory: ``QUEUE_FRAMES`` frames per transfer in Redis, one batch on each side.
(A Lua script taking the frame as an argument cost Redis ~150 us a chunk, copying it;
the pipeline costs ~10.)

Liveness: every instance refreshes ``P:i:{instance}`` several times per
``ROOMDROP_INSTANCE_TIMEOUT`` (10 s); one whose key expired vanished without leaving
(killed), and the first instance to notice claims it and ends its participants' stay
(their grace windows begin, as for a dropped socket).
"""

from __future__ import annotations

from roomdrop.server.redisbackend.backend import RedisBackend, shared_secret
from roomdrop.server.redisbackend.records import decode_record, encode_record
from roomdrop.server.redisbackend.relayqueue import QUEUE_FRAMES

__all__ = ["QUEUE_FRAMES", "RedisBackend", "decode_record", "encode_record", "shared_secret"]
