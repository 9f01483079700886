"""The sans-I/O protocol core: messages, chunk frames, the state table, chunk planning,
file-name safety and the transfer record. Nothing here does I/O or imports asyncio,
sockets or a network library; every other part of roomdrop drives these objects."""

from __future__ import annotations

from roomdrop.protocol.chunks import ChunkSet, chunk_length, count_chunks, indexes_in, ranges_of
from roomdrop.protocol.frames import (
    DATA_CHANNEL_MAX_MESSAGE,
    HEADER_SIZE,
    Chunk,
    ChunkAssembler,
    Frame,
    decode_frame,
    decode_json_chunk,
    encode_frames,
    encode_json_chunk,
)
from roomdrop.protocol.messages import Message, MessageType, Offer, parse_message
from roomdrop.protocol.names import sanitize_filename
from roomdrop.protocol.state import Event, Status, apply_event
from roomdrop.protocol.transfer import Transfer

__all__ = [
    "DATA_CHANNEL_MAX_MESSAGE",
    "HEADER_SIZE",
    "Chunk",
    "ChunkAssembler",
    "ChunkSet",
    "Event",
    "Frame",
    "Message",
    "MessageType",
    "Offer",
    "Status",
    "Transfer",
    "apply_event",
    "chunk_length",
    "count_chunks",
    "decode_frame",
    "decode_json_chunk",
    "encode_frames",
    "encode_json_chunk",
    "indexes_in",
    "parse_message",
    "ranges_of",
    "sanitize_filename",
]
