// One page's connection to one room: it joins, hands every message to the role it
// concerns through one table (HANDLERS), and ticks. It is the Host the roles use
// (transfers.js says what that is) and it keeps window.roomdrop. app.js, the entry point
// index.html loads, only imports this module and calls start().
//
// The roles: outgoing.js (the sender), incoming.js (the receiver), links.js (data
// channels), catchup.js (aligning with room-state), keeping.js (files kept on the server
// for someone away, and who has been in the room lately), kept.js (those files once they
// are all in the store: listed, withdrawn), transfers.js (what they share);
// the session's own parts: signalling.js (the WebSocket), http.js (REST), display.js
// (what the person sees); the page's: signin.js, share.js, picker.js, attention.js.
// Counterpart: src/roomdrop/client/session.py

import { Attention } from "./attention.js";
import { canonicalUuid } from "./protocol.js";
import { PartStore } from "./store.js";
import { catchUp, transfersOf } from "./catchup.js";
import { Display } from "./display.js";
import { ServerApi } from "./http.js";
import { Incoming } from "./incoming.js";
import { Roster } from "./keeping.js";
import { Kept, keptHere } from "./kept.js";
import { Keyring } from "./keyring.js";
import { Links } from "./links.js";
import { Outgoing } from "./outgoing.js";
import { Chooser, showEveryone, watchEveryone, watchFiles } from "./picker.js";
import { Share } from "./share.js";
import { SignIn } from "./signin.js";
import { NotConnected, Signalling, webSocketUrl } from "./signalling.js";
import { isLive, measure, now, wake } from "./transfers.js";

const TICK = 250;

const setState = (state) => (document.body.dataset.state = state);

class Session {
  constructor() {
    this.user = null;
    this.room = null;
    this.joinedRoom = null; // set once the room is shown
    this.lastJoined = null; // {user, room} of the last room shown (left or not)
    this.participants = new Set();
    this.roster = new Roster(); // who has been in the room lately (keeping.js)
    this.serverTransfers = new Map(); // the latest room-state's, by id
    this.requireScan = false; // room-state.require_scan: no receiving here (incoming.js)
    this.maxTransfers = null; // room-state.max_transfers_per_user: the sender's turns
    this.transfers = new Map(); // both directions, by id (window.roomdrop.transfers)
    this.joinWaiters = [];
    this.api = new ServerApi();
    this.keyring = new Keyring(() => this.showParticipants());
    const note = (text, kind) => this.display.note(text, kind);
    this.attention = new Attention();
    this.display = new Display(this, (t, type) => this.control(t, type), this.attention);
    this.signalling = new Signalling({
      url: () => webSocketUrl(this.room, this.api.token, this.keyring.device?.publicText),
      onMessage: (msg) => this.onMessage(msg),
      onFrame: (data) => this.incoming.onRelayFrame(data),
      onLost: () => {
        for (const t of this.transfers.values()) wake(t);
      },
      note,
      setState,
    });
    this.links = new Links(this, {
      onFrame: (remote, data) => this.incoming.onLinkFrame(remote, data),
      onDown: (link, wasOpen) => this.onLinkDown(link, wasOpen),
    });
    this.outgoing = new Outgoing(this, this.links);
    this.incoming = new Incoming(this, new PartStore());
    this.kept = new Kept(this);
    this.signin = new SignIn(this, this.api, note);
    this.share = new Share(note);
    this.chooser = new Chooser({
      others: () => this.display.others(),
      keepable: () => this.display.keepable(),
      chose: (user, files) => {
        this.display.choose(user);
        this.outgoing.enqueueFiles(files, user);
      },
      keep: (user, files) => this.keepFor(user, files),
      everyone: (files) => this.sendToEveryone(files),
    });
  }

  // --- what the roles may use (transfers.js, Host) --------------------------------------

  send(type, payload) {
    this.signalling.send(type, payload);
  }

  trySend(type, payload) {
    return this.signalling.trySend(type, payload);
  }

  sendFrame(frame) {
    return this.signalling.sendFrame(frame);
  }

  online() {
    return this.signalling.connected;
  }

  async waitFor(user) {
    let told = false;
    while (!(this.online() && this.participants.has(user))) {
      if (!told && this.online()) {
        this.display.note(`waiting for ${user} to join the room`);
        told = true;
      }
      await new Promise((r) => {
        this.joinWaiters.push(r);
        setTimeout(r, 1000);
      });
    }
  }

  wakeJoinWaiters() {
    const w = this.joinWaiters;
    this.joinWaiters = [];
    w.forEach((f) => f());
  }

  // --- life cycle -----------------------------------------------------------------------

  async start() {
    this.incoming.store.sweep().catch((e) => console.warn("sweep", e));
    await this.signin.init();
    watchFiles({
      online: () => this.online(),
      send: (files) => this.sendPicked(files),
    });
    watchEveryone((files) => this.sendToEveryone(files));
    this.chooser.init();
    this.attention.init();
    this.share.init();
    window.addEventListener("pagehide", () => {
      this.signalling.closing = true;
      this.pauseAllOnLeave();
    });
    setInterval(() => this.tick(), TICK);
    setState("signin");
    document.body.dataset.ready = "true";
  }

  /** Signed in (signin.js): connect and take the first room-state. Throws if the
   * server refuses. */
  async join(token, user, room) {
    const last = this.lastJoined;
    if (last && (user !== last.user || room !== last.room)) this.leaveBehind(`left room ${last.room}`);
    this.api.token = token;
    this.user = user;
    this.room = room;
    this.roster.listed.clear(); // what is kept for this user is listed again
    setState("joining");
    await this.keyring.init(user);
    await this.links.loadIceServers();
    await this.signalling.connect();
  }

  /** Joined: the room is shown. */
  entered(room) {
    this.share.show(room);
    this.display.note(`joined room ${room} as ${this.user}`);
    this.display.renderParticipants();
    this.joinedRoom = room;
    this.lastJoined = { user: this.user, room };
    setState("joined");
  }

  /** "Leave room" (signin.js): the socket closes cleanly and the page is back at the
   * form. The server takes it as any disconnect (protocol.md §11.8): the others see
   * this user leave, and its active transfers pause, here as there; they resume by
   * themselves once it is back in the room (a sender not back within the reconnect
   * grace, 60 s by default, has its transfers cancelled). */
  async leave() {
    const room = this.joinedRoom;
    if (room === null) return;
    this.joinedRoom = null;
    this.chooser.close();
    for (const t of this.transfers.values()) {
      if (isLive(t) && t.status === "active") (t.direction === "send" ? this.outgoing : this.incoming).setPaused(t);
    }
    for (const remote of [...this.links.links.keys()]) this.links.lose(remote);
    await this.signalling.close();
    this.participants = new Set();
    this.display.renderParticipants();
    this.display.note(`left room ${room}; its transfers under way are paused until you join it again`);
    setState("signin");
  }

  /** Joining another room or as another user: the live transfers of the last one end
   * here (the server keeps them paused; the part files keep their chunks). */
  leaveBehind(why) {
    this.lastJoined = null;
    for (const t of this.transfers.values()) {
      if (isLive(t)) (t.direction === "send" ? this.outgoing : this.incoming).finish(t, "failed", why, "left", { quiet: true });
    }
    this.display.selected = null;
  }

  /** The server refused (or could not be reached): back to the form. */
  refused() {
    this.api.token = null;
    this.user = null;
    setState("signin");
  }

  /** Files the person picked: to the participant chosen, else the chooser asks. */
  sendPicked(files) {
    const to = this.display.selected;
    if (to && !this.chooser.open) this.outgoing.enqueueFiles(files, to);
    else this.chooser.ask(files);
  }

  /** "Send to everyone" (picker.js): each file to every other participant here now, a
   * transfer for each receiver and file (the CLI's `send --to @room`). */
  sendToEveryone(files) {
    const everyone = this.online() ? this.display.others() : [];
    if (!everyone.length) {
      this.display.note(this.online() ? "nobody else is here to send to" : "not connected to the server: try again in a moment", "error");
      return;
    }
    const what = files.length === 1 ? files[0].name : `${files.length} files`;
    this.display.note(`sending ${what} to everyone here: ${everyone.join(", ")} (a transfer for each)`);
    for (const user of everyone) this.outgoing.enqueueFiles(files, user);
  }

  /** "Keep a file for NAME…" (display.js) or "Keep for NAME" in the chooser (picker.js):
   * kept on the server for `user`, who is away. */
  keepFor(user, files) {
    this.outgoing.enqueueFiles(files, user, { kept: true });
  }

  /** The participants changed: the list, and the chooser's list if it is asking. */
  showParticipants() {
    this.display.renderParticipants();
    this.chooser.update();
    showEveryone(this.display.others(), this.online());
  }

  pauseAllOnLeave() {
    for (const t of this.transfers.values()) {
      if (!t._.final && t.status === "active") this.trySend("file-share-pause", { transfer_id: t.transfer_id });
    }
  }

  /** A transfer's Pause, Resume, Cancel or Withdraw button (display.js). */
  control(t, type) {
    if (type === "withdraw") return void this.kept.withdraw(t); // final here, not there
    if (t._.final) return;
    if (type === "file-share-cancel" && t.direction === "send" && this.outgoing.cancelUnsent(t)) return;
    const payload = { transfer_id: t.transfer_id };
    if (type === "file-share-cancel") payload.reason = "user cancelled";
    if (!this.trySend(type, payload)) this.display.note("not connected to the server: try again in a moment", "error");
  }

  onLinkDown(link, wasOpen) {
    this.outgoing.onLinkDown(link.remote);
    this.incoming.onLinkDown(link.remote, wasOpen);
  }

  // --- the dispatch table ---------------------------------------------------------------

  async onMessage(msg) {
    const handler = HANDLERS[msg.type];
    if (!handler) return;
    const payload = msg.payload || {};
    if (payload.transfer_id) payload.transfer_id = canonicalUuid(payload.transfer_id);
    try {
      await handler(this, payload, msg.sender_id ?? null, msg);
    } catch (e) {
      if (e instanceof NotConnected) return;
      throw e;
    }
  }

  /** The role whose transfer `p` is about. */
  owner(p) {
    const t = this.transfers.get(p.transfer_id);
    if (!t) return null;
    if (keptHere(t)) return this.kept; // all in the server's store: what follows is kept.js's
    return t.direction === "send" ? this.outgoing : this.incoming;
  }

  // room-state comes first on every connection, and again on the same one when the server
  // may have lost messages meant for this page (protocol.md §11.11): catch up from it.
  async onRoomState(p) {
    this.participants = new Set(p.participants || []);
    this.participants.add(this.user);
    const known = transfersOf(p);
    this.serverTransfers = known;
    this.keyring.onRoomState(p);
    this.roster.onRoomState(p, this.user);
    // a room that takes only receivers that scan for malware: this page cannot receive
    this.requireScan = p.require_scan === true;
    this.maxTransfers = Number.isInteger(p.max_transfers_per_user) ? p.max_transfers_per_user : null;
    this.display.showScanRequired(this.requireScan);
    const resync = this.signalling.joined();
    if (this.joinedRoom !== null) setState("joined");
    if (this.signalling.connections > 1 && !resync) this.display.note("reconnected to the server");
    this.showParticipants();
    this.wakeJoinWaiters();
    await catchUp(this, known);
  }

  onUserJoined(p) {
    this.participants.add(p.user_id);
    this.roster.saw(p.user_id);
    this.keyring.onJoined(p.user_id, p.key ?? null);
    this.showParticipants();
    for (const t of this.transfers.values()) if (t.peer === p.user_id) wake(t);
    this.wakeJoinWaiters();
  }

  onUserLeft(p) {
    this.participants.delete(p.user_id);
    this.roster.saw(p.user_id); // away from now on, last seen now
    this.keyring.onLeft(p.user_id);
    this.display.unselect(p.user_id);
    this.showParticipants();
    this.links.lose(p.user_id);
    const live = [...this.transfers.values()].filter((t) => t.peer === p.user_id && isLive(t) && !t._.kept);
    if (live.length) this.display.note(`${p.user_id} left the room; their transfers wait for them to come back`, "error");
  }

  onOffer(p, from) {
    if (from === this.user) {
      this.outgoing.onOfferSeen(p);
      return;
    }
    if (p.receiver_id !== this.user || !from) return;
    this.incoming.consider(p, from);
  }

  // --- the clock ------------------------------------------------------------------------

  tick() {
    const at = now();
    for (const t of this.transfers.values()) {
      if (t._.final) continue;
      if (t.status === "active") {
        measure(t, at);
        if (t.direction === "receive") this.incoming.tick(t, at);
      }
      this.display.render(t);
    }
  }

  // --- window.roomdrop ------------------------------------------------------------------

  /** The page's whole state in one place, for debugging (window.roomdrop._state). */
  debugState() {
    const s = this;
    return {
      get user() { return s.user; },
      get token() { return s.api.token; },
      get room() { return s.room; },
      get joinedRoom() { return s.joinedRoom; },
      get ws() { return s.signalling.ws; },
      get connected() { return s.signalling.connected; },
      get connections() { return s.signalling.connections; },
      get closing() { return s.signalling.closing; },
      get participants() { return s.participants; },
      get roster() { return s.roster; },
      get serverTransfers() { return s.serverTransfers; },
      get links() { return s.links.links; },
      get dropped() { return s.incoming.dropped; },
      transfers: s.transfers,
      get stashedRequests() { return s.outgoing.stashed; },
      get queues() { return s.outgoing.queues; },
      get selected() { return s.display.selected; },
      get selectedAuto() { return s.display.selectedAuto; },
      get iceServers() { return s.links.iceServers; },
      get store() { return s.incoming.store; },
      messages: s.display.messages,
      get inbox() { return s.signalling.inbox; },
      get keyring() { return s.keyring; },
      /** A message handled as if the server had sent it (tests of what a server that
       * checks nothing could send). */
      deliver: (msg) => s.onMessage(msg),
    };
  }
}

const signal = (s, p, from, msg) => s.links.onSignal(msg.type, p, from);
const toOwner = (name) => (s, p, from) => s.owner(p)?.[name](p, from);

/** Every message the page takes, and who takes it: one table. */
const HANDLERS = {
  "room-state": (s, p) => s.onRoomState(p), // the first of a connection completes joining
  "user-joined": (s, p) => s.onUserJoined(p),
  "user-left": (s, p) => s.onUserLeft(p),
  offer: signal,
  answer: signal,
  "ice-candidate": signal,
  error: (s, p) => s.outgoing.onRefusal(p),
  "file-share-offer": (s, p, from) => s.onOffer(p, from),
  "file-share-accept": toOwner("onAccept"),
  "file-share-reject": toOwner("onReject"),
  "file-share-complete": toOwner("onComplete"),
  "file-share-pause": toOwner("onPause"),
  "file-share-resume": toOwner("onResume"),
  "file-share-cancel": toOwner("onCancel"),
  "file-share-error": toOwner("onFileShareError"),
  "file-share-chunk-request": (s, p) => s.outgoing.onChunkRequest(p),
  "file-share-progress": toOwner("onProgress"),
  "file-share-stored": (s, p) => s.outgoing.stored(s.transfers.get(p.transfer_id)),
};

export function start() {
  const session = new Session();
  window.roomdrop = {
    // user and room are set once the page has joined (the room is shown)
    get user() {
      return session.joinedRoom ? session.user : null;
    },
    get room() {
      return session.joinedRoom;
    },
    get joined() {
      return session.signalling.connected;
    },
    get participants() {
      return [...session.participants];
    },
    transfers: session.transfers,
    messages: session.display.messages,
    _state: session.debugState(), // for debugging and tests: the page's whole state
  };
  return session.start();
}
