// One WebRTC data channel per remote participant (docs/protocol.md §13.1): label
// "roomdrop", ordered, binary frames of at most 65,536 bytes. The side that sends makes
// the offer. The SDP carries the candidates gathered within a moment; later ones go as
// ice-candidate messages, and received ones are added (a CLI peer's empty one, its end
// of candidates, is ignored).

export const LABEL = "roomdrop";
export const HIGH_WATER = 1024 * 1024;
export const LOW_WATER = 256 * 1024;
export const DRAIN_TIMEOUT = 5000;
const GATHER_WAIT = 1000;

export class LinkDown extends Error {}

export class PeerLink {
  /**
   * @param {string} remote the other participant
   * @param {object} opts {iceServers, signal(kind, payload), onFrame(remote, ArrayBuffer),
   *   onDown(link), onOpen(link), polite}
   */
  constructor(remote, opts) {
    this.remote = remote;
    this.opts = opts;
    this.pc = null;
    this.channel = null;
    this.isOpen = false;
    this.down = false;
    this.openWaiters = [];
    this.drainWaiters = [];
    this.pendingCandidates = [];
  }

  _newConnection() {
    const pc = new RTCPeerConnection({ iceServers: this.opts.iceServers || [] });
    this.pc = pc;
    pc.onicecandidate = (event) => {
      if (pc !== this.pc || !event.candidate || !pc._described) return;
      // trickled after the description went: send it on its own
      const c = event.candidate;
      if (!c.candidate) return;
      this.opts.signal("ice-candidate", {
        target_id: this.remote,
        candidate: c.candidate,
        sdpMid: c.sdpMid,
        sdpMLineIndex: c.sdpMLineIndex,
      });
    };
    pc.ondatachannel = (event) => {
      if (pc === this.pc && event.channel.label === LABEL) this._watch(event.channel);
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) {
        this._markDown();
      }
    };
    return pc;
  }

  async _describe(pc, description) {
    await pc.setLocalDescription(description);
    await waitForGathering(pc, GATHER_WAIT);
    pc._described = true;
    const local = pc.localDescription;
    return { target_id: this.remote, type: local.type, sdp: local.sdp };
  }

  /** Start the connection from this side (the side that will send). */
  async offer() {
    this._closeConnection();
    this.down = false;
    this.isOpen = false;
    const pc = this._newConnection();
    this._watch(pc.createDataChannel(LABEL, { ordered: true }));
    const payload = await this._describe(pc, await pc.createOffer());
    if (pc !== this.pc) return;
    await this.opts.signal("offer", payload);
  }

  async onSignal(kind, payload) {
    if (kind === "offer") {
      const pc0 = this.pc;
      if (pc0 && pc0.signalingState === "have-local-offer" && !this.opts.polite && !this.isOpen) {
        return; // both offered at once: the impolite side keeps its own offer
      }
      this._closeConnection();
      this.down = false;
      this.isOpen = false;
      const pc = this._newConnection();
      await pc.setRemoteDescription({ type: "offer", sdp: payload.sdp });
      await this._flushCandidates();
      const answer = await this._describe(pc, await pc.createAnswer());
      if (pc !== this.pc) return;
      await this.opts.signal("answer", answer);
    } else if (kind === "answer") {
      const pc = this.pc;
      if (pc && pc.signalingState === "have-local-offer") {
        await pc.setRemoteDescription({ type: "answer", sdp: payload.sdp });
        await this._flushCandidates();
      }
    } else if (kind === "ice-candidate") {
      if (typeof payload.candidate !== "string" || !payload.candidate) return;
      const init = {
        candidate: payload.candidate,
        sdpMid: payload.sdpMid ?? null,
        sdpMLineIndex: payload.sdpMLineIndex ?? null,
      };
      if (!this.pc || !this.pc.remoteDescription) {
        this.pendingCandidates.push(init);
        return;
      }
      try {
        await this.pc.addIceCandidate(init);
      } catch (e) {
        console.debug("ice candidate not added", e);
      }
    }
  }

  async _flushCandidates() {
    const list = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const init of list) {
      try {
        await this.pc.addIceCandidate(init);
      } catch {}
    }
  }

  _watch(channel) {
    this.channel = channel;
    channel.binaryType = "arraybuffer";
    channel.bufferedAmountLowThreshold = LOW_WATER;
    const opened = () => {
      if (channel !== this.channel) return;
      this.isOpen = true;
      this.down = false;
      const waiters = this.openWaiters;
      this.openWaiters = [];
      waiters.forEach((w) => w(true));
      if (this.opts.onOpen) this.opts.onOpen(this);
    };
    if (channel.readyState === "open") opened();
    channel.onopen = opened;
    channel.onclose = () => {
      if (channel === this.channel) this._markDown();
    };
    channel.onerror = () => {};
    channel.onbufferedamountlow = () => this._wakeDrain();
    channel.onmessage = (event) => {
      if (typeof event.data === "string") return; // text is ignored (§13.1)
      this.opts.onFrame(this.remote, event.data);
    };
  }

  _wakeDrain() {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    waiters.forEach((w) => w());
  }

  /** True once the channel is open; false if it is not within `ms`. */
  waitOpen(ms) {
    if (this.isOpen && !this.down) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.openWaiters = this.openWaiters.filter((w) => w !== done);
        resolve(this.isOpen && !this.down);
      }, ms);
      const done = (ok) => {
        clearTimeout(timer);
        resolve(ok);
      };
      this.openWaiters.push(done);
    });
  }

  /** Queue frames; wait while more than HIGH_WATER bytes are queued. */
  async send(frames) {
    const channel = this.channel;
    if (!channel || !this.isOpen || this.down || channel.readyState !== "open") {
      throw new LinkDown(`no data channel to ${this.remote}`);
    }
    try {
      for (const f of frames) channel.send(f);
    } catch (e) {
      this._markDown();
      throw new LinkDown(`data channel to ${this.remote} failed: ${e}`);
    }
    while (channel.bufferedAmount > HIGH_WATER) {
      const drained = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), DRAIN_TIMEOUT);
        this.drainWaiters.push(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      if (!drained) {
        this._markDown();
        throw new LinkDown(`data channel to ${this.remote} took nothing for 5 s`);
      }
      if (!this.isOpen || this.down || channel.readyState !== "open") {
        throw new LinkDown(`data channel to ${this.remote} closed`);
      }
    }
  }

  _markDown() {
    if (this.down) return;
    const wasOpen = this.isOpen;
    this.down = true;
    this.isOpen = false;
    this._wakeDrain();
    const waiters = this.openWaiters;
    this.openWaiters = [];
    waiters.forEach((w) => w(false));
    if (this.opts.onDown) this.opts.onDown(this, wasOpen);
  }

  _closeConnection() {
    const pc = this.pc;
    const channel = this.channel;
    this.pc = null;
    this.channel = null;
    try {
      if (channel) channel.close();
    } catch {}
    try {
      if (pc) pc.close();
    } catch {}
  }

  close() {
    this._markDown();
    this._closeConnection();
  }
}

function waitForGathering(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}
