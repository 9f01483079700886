"""The device key file, the trusted keys file and the session's keyring, as units: real
files in the test's directory, real keys; no server."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path

import pytest

from roomdrop.client.configdir import ConfigError, config_dir, create_private
from roomdrop.client.keyring import Keyring
from roomdrop.client.keys import KEY_FILE, key_path, load_device_key, load_or_create
from roomdrop.client.peerkeys import TRUST_FILE, PeerKeys, Seen, server_id
from roomdrop.e2e import DeviceKey, safety_number, seal_offer
from roomdrop.exceptions import E2EError, E2ERequired, KeyChanged, MimeTypeNotAllowed
from roomdrop.protocol.messages import MimeLists, Offer, RoomState
from roomdrop.protocol.transfer import Transfer

SERVER = "http://127.0.0.1:8000"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the device key --------------------------------------------------------------------


def test_the_key_is_made_once_mode_0600_in_a_directory_of_mode_0700(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "roomdrop"
    first = load_or_create(directory)
    assert key_path(directory) == directory / KEY_FILE
    assert mode_of(directory) == 0o700
    assert mode_of(directory / KEY_FILE) == 0o600
    again = load_or_create(directory)
    assert again.public == first.public
    assert again.private_bytes() == first.private_bytes()
    document = json.loads((directory / KEY_FILE).read_text())
    assert document["public_key"] == first.public_text
    assert [p.name for p in directory.iterdir()] == [KEY_FILE]  # no temporary left


def test_a_key_made_meanwhile_by_another_command_is_kept_not_replaced(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    before = (tmp_path / KEY_FILE).read_bytes()
    assert not create_private(tmp_path / KEY_FILE, b"other")
    assert (tmp_path / KEY_FILE).read_bytes() == before
    assert load_device_key(tmp_path) is not None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused_saying_what_to_do(tmp_path: Path, mode: int) -> None:
    load_or_create(tmp_path)
    (tmp_path / KEY_FILE).chmod(mode)
    with pytest.raises(ConfigError) as refused:
        load_or_create(tmp_path)
    message = str(refused.value)
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {tmp_path / KEY_FILE}" in message


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a version 1 key file"),
        (b'{"version": 1}', "no private_key and public_key"),
        (b'{"version": 1, "private_key": "abc", "public_key": "abc"}', "private_key"),
    ],
)
def test_a_damaged_key_file_is_refused_not_replaced(
    tmp_path: Path, content: bytes, why: str
) -> None:
    (tmp_path / KEY_FILE).write_bytes(content)
    (tmp_path / KEY_FILE).chmod(0o600)
    with pytest.raises(ConfigError, match="is damaged") as refused:
        load_or_create(tmp_path)
    assert why in str(refused.value)
    assert (tmp_path / KEY_FILE).read_bytes() == content


def test_a_key_file_whose_public_key_is_not_its_private_keys_is_damaged(tmp_path: Path) -> None:
    load_or_create(tmp_path)
    document = json.loads((tmp_path / KEY_FILE).read_text())
    document["public_key"] = DeviceKey.generate().public_text
    (tmp_path / KEY_FILE).write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="its public_key is not the private key's"):
        load_or_create(tmp_path)


def test_the_config_directory_follows_the_setting_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert config_dir(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_dir() == tmp_path / "xdg" / "roomdrop"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # not absolute: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "roomdrop"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_dir() == tmp_path / "home" / ".config" / "roomdrop"


# --- trust on first use ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sid"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("ws://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("HTTPS://Example.ORG:443/base/", "https://example.org/base"),
        ("wss://example.org/base", "https://example.org/base"),
        ("http://example.org:80", "http://example.org"),
        ("127.0.0.1:9", "http://127.0.0.1:9"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_trust_is_kept_per_server_whatever_the_url_spelling(url: str, sid: str) -> None:
    assert server_id(url) == sid


def test_the_first_key_is_trusted_a_changed_one_refused_and_kept_pending(tmp_path: Path) -> None:
    store = PeerKeys(tmp_path)
    k1, k2 = DeviceKey.generate().public_text, DeviceKey.generate().public_text
    assert store.check(SERVER, "bob", k1) is Seen.FIRST
    assert mode_of(tmp_path / TRUST_FILE) == 0o600
    assert store.check(SERVER + "/", "bob", k1) is Seen.KNOWN
    assert store.check(SERVER, "bob", k2) is Seen.CHANGED
    assert store.get(SERVER, "bob").trusted == [k1]
    assert store.get(SERVER, "bob").pending == k2
    assert store.check(SERVER, "bob", k2) is Seen.CHANGED  # still refused
    # another server: bob there is someone else
    assert store.check("http://other:8000", "bob", k2) is Seen.FIRST
    assert store.trust_pending("bob", "http://nowhere") == []
    assert store.trust_pending("bob") == [("http://127.0.0.1:8000", k2)]
    assert store.check(SERVER, "bob", k2) is Seen.KNOWN
    assert store.check(SERVER, "bob", k1) is Seen.KNOWN  # trusting adds, forgets none
    assert store.get(SERVER, "bob").pending is None
    assert store.trust_pending("bob") == []


def test_a_damaged_trusted_keys_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / TRUST_FILE).write_text("{")
    (tmp_path / TRUST_FILE).chmod(0o600)
    with pytest.raises(ConfigError, match=r"trusted keys file .* is damaged"):
        PeerKeys(tmp_path).check(SERVER, "bob", DeviceKey.generate().public_text)


# --- the keyring -----------------------------------------------------------------------


def keyring(tmp_path: Path, user: str, device: DeviceKey, **kwargs: bool) -> Keyring:
    return Keyring(user, device, PeerKeys(tmp_path / user), server=lambda: SERVER, **kwargs)


def room_state(keys: dict[str, str], require: bool | None = None) -> RoomState:
    return RoomState(participants=list(keys), keys=keys, require_e2e=require)


def record(**more: str) -> Transfer:
    fields = {
        "transfer_id": str(uuid.uuid4()),
        "room_id": "r",
        "sender_id": "alice",
        "receiver_id": "bob",
        "filename": "f.bin",
        "file_size": len(PNG),
        "chunk_size": 65536,
        "total_chunks": 1,
        "sha256": "0" * 64,
        "mime_type": "application/pdf",
        "created_mono": 0.0,
        **more,
    }
    return Transfer(**fields)  # type: ignore[arg-type]


def offer_of(r: Transfer, sender: DeviceKey, receiver_key: str) -> Offer:
    e2e, _ = seal_offer(r, sender, receiver_key)
    return Offer(
        transfer_id=uuid.UUID(r.transfer_id),
        receiver_id=r.receiver_id,
        filename=r.filename,
        file_size=r.file_size,
        mime_type=r.mime_type,
        chunk_size=r.chunk_size,
        total_chunks=r.total_chunks,
        sha256=r.sha256,
        e2e=e2e,
    )


def test_a_receiver_without_a_key_gets_the_clear_only_where_the_server_allows_it(
    tmp_path: Path,
) -> None:
    ring = keyring(tmp_path, "alice", DeviceKey.generate())
    ring.on_room_state(room_state({}, require=False))
    assert ring.for_receiver("bob") is None
    ring.on_room_state(room_state({}, require=True))
    with pytest.raises(E2ERequired, match="bob published no device key"):
        ring.for_receiver("bob")


def test_a_senders_view_of_a_receiver_whose_key_changed(tmp_path: Path) -> None:
    alice, bob, bob2 = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    ring = keyring(tmp_path, "alice", alice)
    ring.on_room_state(room_state({"bob": bob.public_text}))
    first = ring.for_receiver("bob")
    assert first is not None and first.key == bob.public_text
    assert first.safety_number == safety_number("alice", alice.public, "bob", bob.public)
    assert first.note is not None and "first time bob is seen" in first.note
    again = ring.for_receiver("bob")
    assert again is not None and again.note is None

    ring.on_joined("bob", bob2.public_text)  # bob came back with another key
    with pytest.raises(KeyChanged) as refused:
        ring.for_receiver("bob")
    exc = refused.value
    assert (exc.code, exc.user_id, exc.known, exc.seen) == (
        "key-changed",
        "bob",
        [bob.public_text],
        bob2.public_text,
    )
    old_number = safety_number("alice", alice.public, "bob", bob.public)
    new_number = safety_number("alice", alice.public, "bob", bob2.public)
    for part in (
        "the device key of bob on http://127.0.0.1:8000 changed",
        bob.public_text,
        bob2.public_text,
        old_number,
        new_number,
        "`roomdrop keys trust bob`",
        "--trust-new-key",
    ):
        assert part in exc.message, part

    trusting = keyring(tmp_path, "alice", alice, trust_new_key=True)
    trusting.on_room_state(room_state({"bob": bob2.public_text}))
    peer = trusting.for_receiver("bob")
    assert peer is not None and peer.safety_number == new_number
    assert peer.note == "trusting the new device key of bob (--trust-new-key)"
    assert ring.for_receiver("bob") is not None  # trusted from now on, for every command


def test_a_receiver_opens_only_an_offer_sealed_to_it_by_the_key_its_sender_published(
    tmp_path: Path,
) -> None:
    alice, bob, mallory = DeviceKey.generate(), DeviceKey.generate(), DeviceKey.generate()
    ring = keyring(tmp_path, "bob", bob)
    r = record()
    ring.on_room_state(room_state({"alice": alice.public_text}))
    peer = ring.for_offer(offer_of(r, alice, bob.public_text), "alice")
    assert peer is not None and peer.key == alice.public_text
    assert peer.safety_number == safety_number("alice", alice.public, "bob", bob.public)

    with pytest.raises(E2EError, match=r"sealed to the device key .*, not to this device's"):
        ring.for_offer(offer_of(r, alice, mallory.public_text), "alice")
    with pytest.raises(E2EError, match="but alice published " + alice.public_text):
        ring.for_offer(offer_of(r, mallory, bob.public_text), "alice")
    ring.on_left("alice")
    with pytest.raises(E2EError, match="alice published no key"):
        ring.for_offer(offer_of(r, alice, bob.public_text), "alice")
    # taking a transfer up after a restart: the sender may be gone, its key is trusted
    assert ring.for_offer(offer_of(r, alice, bob.public_text), "alice", taking_up=True)
    # a new key for alice, published and all: refused until trusted
    ring.on_joined("alice", mallory.public_text)
    with pytest.raises(KeyChanged, match="the device key of alice"):
        ring.for_offer(offer_of(r, mallory, bob.public_text), "alice")


def test_an_offer_in_the_clear_is_taken_only_where_the_server_allows_it(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "bob", DeviceKey.generate())
    clear = Offer.model_validate(
        {
            **offer_of(record(), DeviceKey.generate(), ring.device.public_text).model_dump(),
            "e2e": None,
        }
    )
    ring.on_room_state(room_state({}, require=False))
    assert ring.for_offer(clear, "alice") is None
    ring.on_room_state(room_state({}, require=True))
    with pytest.raises(E2ERequired):
        ring.for_offer(clear, "alice")


def test_the_first_chunk_must_be_what_the_offer_declared(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "bob", DeviceKey.generate())
    with pytest.raises(MimeTypeNotAllowed) as refused:
        ring.check_content(record(mime_type="application/pdf"), PNG)
    assert refused.value.code == "mime-type-not-allowed"
    assert refused.value.message == "f.bin: declared application/pdf, but the content is image/png"
    ring.check_content(record(mime_type="image/png"), PNG)
    ring.check_content(record(mime_type="application/octet-stream"), PNG)
    ring.on_room_state(RoomState(participants=[], mime=MimeLists(allow=[], deny=["image/*"])))
    with pytest.raises(MimeTypeNotAllowed, match="which is not allowed here"):
        ring.check_content(record(mime_type="application/octet-stream"), PNG)
