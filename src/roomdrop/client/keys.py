"""The CLI's device key: one X25519 key pair (:class:`roomdrop.e2e.DeviceKey`) per user
account, kept in the config directory (:mod:`.configdir`: ``ROOMDROP_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/roomdrop``, else ``~/.config/roomdrop``) as ``device-key.json``,
made on first use.

**Threat model.** The private key is what lets this device open the content keys sealed
to it and prove to receivers that a transfer comes from it; whoever reads the file can
read every transfer sealed to this device (past ones too, if they recorded the
ciphertext) and pass for it. So it lives only on this disk, in a file of mode 0600 in a
directory of mode 0700, created all at once (it appears whole or not at all, and a
second command starting at the same moment uses the same key rather than replacing
it). A key file that other users may read or change, that belongs to another user, or
that is damaged is refused with a message saying what to do, never used or silently
replaced: a new key makes every peer that trusted the old one refuse this device
(``key-changed``) until they trust the new one. The file is not encrypted with a
passphrase: it is as safe as this account and its disk (the same as an unencrypted SSH
key); anyone with root, or this account, can take it. A key that is lost or replaced is
a new identity, which peers see as a changed key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from roomdrop.client.configdir import ConfigError, create_private, read_private
from roomdrop.e2e import DeviceKey, decode_key, encode_key
from roomdrop.exceptions import E2EError

__all__ = ["KEY_FILE", "ConfigError", "key_path", "load_device_key", "load_or_create"]

KEY_FILE: Final = "device-key.json"
_KIND: Final = "roomdrop device key (X25519)"


def key_path(directory: Path) -> Path:
    return directory / KEY_FILE


def _encode(device: DeviceKey) -> bytes:
    document = {
        "version": 1,
        "kind": _KIND,
        "private_key": encode_key(device.private_bytes()),
        "public_key": device.public_text,
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def _decode(path: Path, raw: bytes) -> DeviceKey:
    def damaged(why: str) -> ConfigError:
        return ConfigError(
            f"the device key file {path} is damaged ({why}); it is not used. Restore it "
            "from a backup, or move it away to make a new key (peers that trusted the old "
            "one will refuse this device until they trust the new one)"
        )

    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise damaged("not JSON") from None
    if not isinstance(document, dict) or document.get("version") != 1:
        raise damaged("not a version 1 key file")
    private, public = document.get("private_key"), document.get("public_key")
    if not isinstance(private, str) or not isinstance(public, str):
        raise damaged("no private_key and public_key")
    try:
        device = DeviceKey.from_private_bytes(decode_key(private))
    except E2EError as exc:
        raise damaged(f"private_key: {exc.message}") from None
    if device.public_text != public:
        raise damaged("its public_key is not the private key's")
    return device


def load_device_key(directory: Path) -> DeviceKey | None:
    """The device key kept in ``directory``, None if there is none yet. ConfigError if
    the file is damaged, not private or not this user's."""
    path = key_path(directory)
    raw = read_private(path)
    return None if raw is None else _decode(path, raw)


def load_or_create(directory: Path) -> DeviceKey:
    """The device key kept in ``directory``, made (mode 0600) if there is none yet."""
    device = load_device_key(directory)
    if device is not None:
        return device
    fresh = DeviceKey.generate()
    if create_private(key_path(directory), _encode(fresh)):
        return fresh
    device = load_device_key(directory)  # another command made one meanwhile: that one
    if device is None:
        raise ConfigError(f"{key_path(directory)} vanished while it was being made")
    return device
