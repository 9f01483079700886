// The WebSocket to the server (docs/protocol.md §3, §13): control messages in and out as
// JSON text, relay frames in and out as binary, and reconnecting with a back-off (0.2 s
// doubling to 5 s) until the page leaves or the server closes it for good (4400, 4401,
// 4409). Received messages are handled one after another, in order (the inbox chain).
// Counterpart: src/roomdrop/client/signalling.py

const RELAY_HIGH_WATER = 1024 * 1024;
const FATAL = {
  4401: "the server refused the token",
  4400: "invalid room name",
  4409: "this user joined the room elsewhere (this page was replaced)",
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class NotConnected extends Error {}

/** The room's WebSocket address; `key`: this page's device public key, published to the
 * room (§14.1). */
export function webSocketUrl(room, token, key = null) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const publish = key ? `&key=${encodeURIComponent(key)}` : "";
  return `${scheme}://${location.host}/webrtc/ws/${encodeURIComponent(room)}?token=${encodeURIComponent(token)}${publish}`;
}

export class Signalling {
  /**
   * @param {object} opts {url() the address to (re)connect to, onMessage(msg) (awaited,
   *   one at a time), onFrame(ArrayBuffer), onLost() the connection closed,
   *   note(text, kind), setState(data-state)}
   */
  constructor(opts) {
    this.opts = opts;
    this.ws = null;
    this.connected = false;
    this.connections = 0;
    this.closing = false; // the page is going away: no reconnecting
    this.generation = 0; // a close() ends the reconnecting of every connect() before it
    this.inbox = Promise.resolve();
  }

  /** The session took a room-state: connected (again). True when it is not the first
   * of this connection (a resync, §11.11). */
  joined() {
    const resync = this.connected;
    this.connected = true;
    if (!resync) this.connections += 1;
    return resync;
  }

  /** Open the WebSocket; resolves once the first room-state has been handled, rejects
   * if the server closes it for good first. Reconnects by itself afterwards. */
  connect() {
    const generation = this.generation;
    return new Promise((resolve, reject) => {
      let settled = false;
      let delay = 200;
      const open = () => {
        if (generation !== this.generation) return; // left meanwhile
        const ws = new WebSocket(this.opts.url());
        ws.binaryType = "arraybuffer";
        this.ws = ws;
        ws.onmessage = (event) => {
          if (typeof event.data === "string") {
            let msg;
            try {
              msg = JSON.parse(event.data);
            } catch {
              return;
            }
            this.inbox = this.inbox
              .then(() => this.opts.onMessage(msg))
              .catch((e) => console.error("handling", msg && msg.type, e));
            if (msg.type === "room-state" && !settled) {
              settled = true;
              this.inbox.then(() => resolve());
            }
          } else {
            this.opts.onFrame(event.data);
          }
        };
        ws.onopen = () => {
          delay = 200;
        };
        ws.onclose = (event) => {
          if (ws !== this.ws) return;
          const wasConnected = this.connected;
          this.connected = false;
          this.opts.setState("reconnecting");
          this.opts.onLost();
          const fatal = FATAL[event.code];
          if (fatal || this.closing) {
            const text = fatal ? `${fatal}${event.reason ? `: ${event.reason}` : ""}` : "left the room";
            this.opts.note(text, fatal ? "error" : "info");
            this.opts.setState(fatal ? "closed" : "left");
            if (!settled) {
              settled = true;
              reject(new Error(text));
            }
            return;
          }
          if (wasConnected) this.opts.note("lost the connection to the server; reconnecting", "error");
          setTimeout(open, delay);
          delay = Math.min(delay * 2, 5000);
        };
      };
      open();
    });
  }

  /** Leave the room: the socket is closed cleanly (1000) and not reconnected; resolves
   * once it is closed. The server takes it as any disconnect (protocol.md §11.8). */
  close() {
    const ws = this.ws;
    this.generation += 1;
    this.closing = true;
    this.connected = false;
    return new Promise((resolve) => {
      const done = () => {
        if (this.ws === ws) this.ws = null;
        this.closing = false;
        resolve();
      };
      if (!ws || ws.readyState === WebSocket.CLOSED) return done();
      ws.addEventListener("close", done, { once: true });
      setTimeout(done, 3000);
      ws.close(1000, "left the room");
    });
  }

  send(type, payload) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.connected) {
      throw new NotConnected("not connected to the server");
    }
    const clean = {};
    const signalling = type === "offer" || type === "answer" || type === "ice-candidate";
    for (const [k, v] of Object.entries(payload)) {
      if (v === undefined || (v === null && !signalling)) continue;
      clean[k] = v;
    }
    ws.send(JSON.stringify({ type, payload: clean, sender_id: null, room_id: null, timestamp: null }));
  }

  trySend(type, payload) {
    try {
      this.send(type, payload);
      return true;
    } catch (e) {
      if (!(e instanceof NotConnected)) throw e;
      return false;
    }
  }

  /** A chunk frame through the relay, waiting while more than RELAY_HIGH_WATER is
   * buffered (the WebSocket's back-pressure). */
  async sendFrame(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this.connected) throw new NotConnected();
    ws.send(frame);
    while (ws.bufferedAmount > RELAY_HIGH_WATER) {
      if (ws.readyState !== WebSocket.OPEN) throw new NotConnected();
      await sleep(4);
    }
  }
}
