// The server's REST endpoints the page needs (docs/protocol.md §9), with this page's
// token once it has one: guest sign-in, the ICE servers, a transfer's current record,
// cancelling a transfer (withdrawing a kept file: kept.js).
// A refusal throws an Error whose message is the error body's detail, with .status
// (HTTP) and .code (the body's code).
// Counterpart: src/roomdrop/client/http.py

export class ServerApi {
  constructor() {
    this.token = null; // sent as a Bearer token once set (session.js sets it on joining)
  }

  async call(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (options.body) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { ...options, headers });
    let body = null;
    try {
      body = await response.json();
    } catch {}
    if (!response.ok) {
      const detail = body && (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
      const err = new Error(detail || `HTTP ${response.status}`);
      err.status = response.status;
      err.code = body && body.code;
      throw err;
    }
    return body;
  }

  /** GET /webrtc/guest: {enabled}, whether a display name may stand for a token here. */
  guestPolicy() {
    return this.call("/webrtc/guest");
  }

  /** POST /webrtc/guest: {token, user_id} for the guest `name`. */
  guestToken(name) {
    return this.call("/webrtc/guest", { method: "POST", body: JSON.stringify({ name }) });
  }

  /** GET /webrtc/config: the RTCIceServer list the server hands out. */
  async iceServers() {
    const config = await this.call("/webrtc/config");
    return Array.isArray(config.ice_servers) ? config.ice_servers : [];
  }

  /** The server's record of a transfer (GET …/file-transfer/{id}/progress). */
  transfer(room, transferId) {
    return this.call(`/webrtc/rooms/${encodeURIComponent(room)}/file-transfer/${transferId}/progress`);
  }

  /** DELETE …/file-transfer/{id}: cancel it (either party), with `reason`; the record as
   * the server left it. */
  cancel(room, transferId, reason) {
    const query = new URLSearchParams({ reason });
    return this.call(`/webrtc/rooms/${encodeURIComponent(room)}/file-transfer/${transferId}?${query}`, { method: "DELETE" });
  }
}
