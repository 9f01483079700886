// Peer links: one WebRTC data channel (rtc.js) per remote participant, made when there is
// something to send to them (ensure) or when they offer one (onSignal), and lost when
// they leave (lose). Frames arriving on a link go to onFrame (the receiving role); a
// link that goes down is reported to onDown (both roles: the sender goes on through the
// relay, the receiver asks again for what was in flight). The ICE servers are fetched
// from the server once (iceServers).
// Counterpart: src/roomdrop/client/links.py

import { PeerLink } from "./rtc.js";

export class Links {
  /**
   * @param {object} host the session (transfers.js, Host): user, api, send, waitFor
   * @param {object} opts {onFrame(remote, ArrayBuffer), onDown(link, wasOpen)}
   */
  constructor(host, { onFrame, onDown }) {
    this.host = host;
    this.onFrame = onFrame;
    this.onDown = onDown;
    this.links = new Map(); // remote user → PeerLink
    this.iceServers = null; // once fetched
  }

  /** The ICE servers the server hands out (fetched once; [] if it cannot say). */
  async loadIceServers() {
    if (this.iceServers === null) {
      try {
        this.iceServers = await this.host.api.iceServers();
      } catch (e) {
        console.warn("no ICE configuration", e);
        return [];
      }
    }
    return this.iceServers;
  }

  /** The link to `remote`, if there is one. */
  get(remote) {
    return this.links.get(remote);
  }

  /** The sender's side: a link that is open or opening, else a new offer. */
  async ensure(remote) {
    await this.loadIceServers();
    const link = this.link(remote);
    link.opts.iceServers = this.iceServers || [];
    if ((link.pc && !link.down) || link.isOpen) return link;
    link.down = false;
    (async () => {
      await this.host.waitFor(remote);
      try {
        await link.offer();
      } catch (e) {
        console.warn("offer to", remote, "failed", e);
        link.close();
      }
    })();
    return link;
  }

  /** offer, answer or ice-candidate from `from`. */
  async onSignal(type, p, from) {
    if (!from || from === this.host.user) return;
    const link = this.link(from);
    try {
      await link.onSignal(type, p);
    } catch (e) {
      console.warn("signalling with", from, "failed", e);
    }
  }

  /** `remote` left the room. */
  lose(remote) {
    const link = this.links.get(remote);
    if (link) {
      this.links.delete(remote);
      link.close();
    }
  }

  link(remote) {
    let link = this.links.get(remote);
    if (!link) {
      link = new PeerLink(remote, {
        iceServers: this.iceServers || [],
        polite: this.host.user > remote,
        signal: async (kind, payload) => this.host.send(kind, payload),
        onFrame: (from, data) => this.onFrame(from, data),
        onDown: (l, wasOpen) => this.onDown(l, wasOpen),
      });
      this.links.set(remote, link);
    }
    return link;
  }
}
