// roomdrop in the browser: sign in, join a room, send files to a participant and receive
// theirs, peer to peer over a WebRTC data channel or through the server's relay.
// It follows the reference client (src/roomdrop/client/, docs/protocol.md §13), module
// for module under the same names. This file is the entry point index.html loads: it
// only starts session.js.
//
// Modules (page ↔ reference client):
//   session.js     connect, one dispatch table, the clock, window.roomdrop ↔ session.py
//   transfers.js   a transfer's bookkeeping, Role, the Host the roles use ↔ transfers.py
//   outgoing.js    offer, take-up, the pump, choosing the transport      ↔ outgoing.py
//   incoming.js    an offer considered, accepted; chunks in; completion  ↔ incoming.py
//   links.js       peer links: made, reused, lost                        ↔ links.py
//   catchup.js     aligning with room-state after a reconnect            ↔ catchup.py
//   signalling.js  the WebSocket: messages, relay frames, reconnecting   ↔ signalling.py
//   http.js        REST calls                                            ↔ http.py
//   display.js     participants, offers, transfers, the message log      ↔ display.py
//   rtc.js         one WebRTC data channel                               ↔ rtc/link.py
//   keyring.js     published and trusted keys, the e2e checks            ↔ keyring.py
//   sealing.js     the sender's e2e part (seal the offer, seal chunks)   ↔ outgoing.py
//   opening.js     the receiver's e2e part (check, open the content key) ↔ incoming.py
//   completion.js  the whole file verified, put in place, announced      ↔ incoming.py
//   inbox.js       received frames on their way to the worker            ↔ incoming.py
//   hashing.js     the offer's sha256 (hash-worker.js)                   ↔ scans.py
//   signin.js (the sign-in form, guests, leaving, signing out), share.js (the share
//   link, its QR code), picker.js (the file input, drag and drop, the chooser),
//   attention.js (an offer in the tab's title and as a notification): the page's own.
//   protocol.js (frames, ranges, names), e2e.js (the crypto mirror of roomdrop/e2e.py:
//   HPKE, chunk cipher, safety numbers; the page's threat model), keys.js (the device
//   key and trust on first use in IndexedDB ↔ client/keys.py, peerkeys.py), policy.js
//   (the receiver's MIME check ↔ protocol/policy.py), store.js, opfs-worker.js and
//   part-files.js (part files in the origin-private file system; frames decrypted or
//   verified, chunk 0 checked, written), hash-worker.js (the offer's sha256),
//   vendor/noble-hashes (streaming sha256), vendor/qrcode-generator, vendor/hpke
//   (@hpke/core), vendor/file-type (the magic-bytes sniffer); scripts/vendor-page
//   rebuilds the last two.
//
// For tests: <body data-ready="true"> once the page can be used, data-state
// "signin" | "joining" | "joined" | "reconnecting" | "closed" ("signin" again after
// Leave room or Sign out). data-testid hooks:
// name-input, token-input, room-input, join-button, share-link, share-copy, share-qr,
// me, scan-required (shown in a room that takes only receivers that scan), notify-button,
// notify-state, leave-button, signout-button, participant (data-user), participant-key (data-user, data-seen "first" | "known" | "changed",
// data-safety-number) with safety-number, participant-key-warning / trust-new-key,
// file-input, chooser (files picked with nobody chosen) with
// chooser-participant (data-user) / chooser-cancel, offer (data-transfer-id) with
// offer-e2e (safety-number), offer-key-warning (-trust), offer-scan-required (the room
// requires a malware scan this page cannot make: Accept disabled), offer-accept /
// offer-reject,
// transfer (data-transfer-id, data-status, data-direction "send" | "receive",
// data-safety-number) with transfer-status, transfer-transport, transfer-e2e
// (transfer-safety-number), transfer-key-warning (-trust), transfer-progress,
// transfer-percent, transfer-pause / -resume / -cancel, transfer-save; message (the
// log, newest first).
// window.roomdrop: {user, room, joined, participants, transfers: Map id → transfer
// (status, transport, bytes_via {p2p, relay}, resumed_bytes, sha256, error, error_code,
// refused, e2e, safety_number, ...), messages}.

import { start } from "./session.js";

start();
