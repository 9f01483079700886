// Getting the person's attention for an offer (page only; the CLI asks on its terminal):
// an offer that arrives while the tab is hidden shows in the tab's title ("(1) offer
// from alice — roomdrop") until it is seen (the tab is shown again) or answered, and,
// where the person allowed it, as a notification. Permission is asked only when they
// click "Notify me".

import { formatBytes } from "./protocol.js";

const $ = (sel) => document.querySelector(sel);

const supported = () => typeof Notification === "function";

export class Attention {
  constructor() {
    this.base = document.title; // the page's own title
    this.unseen = new Map(); // transfer offered while hidden → its notification, or null
  }

  init() {
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.seen();
    });
    $("#notify-button").addEventListener("click", () => this.ask());
    this.showControl();
  }

  /** The "Notify me" button while the browser can still ask; what was answered. */
  showControl() {
    const button = $("#notify-button");
    const state = $("#notify-state");
    const permission = supported() ? Notification.permission : "unsupported";
    button.hidden = permission !== "default";
    state.textContent = {
      granted: "Offers to a hidden tab are notified.",
      denied: "Notifications blocked (the browser's site settings can allow them).",
    }[permission] || "";
  }

  async ask() {
    try {
      await Notification.requestPermission();
    } catch (e) {
      console.warn("notification permission", e);
    }
    this.showControl();
  }

  /** An offer waits for an answer (display.showOffer). */
  offered(t) {
    if (!document.hidden || this.unseen.has(t)) return;
    let shown = null;
    if (supported() && Notification.permission === "granted") {
      try {
        shown = new Notification(`Offer from ${t.peer}`, {
          body: `${t.filename} (${formatBytes(t.file_size)}, ${t.mime_type})`,
          tag: t.transfer_id,
        });
        shown.onclick = () => {
          window.focus();
          shown.close();
        };
      } catch (e) {
        console.warn("no notification", e);
      }
    }
    this.unseen.set(t, shown);
    this.showTitle();
  }

  /** The offer was answered, or withdrawn (display.removeOffer). */
  answered(t) {
    if (!this.unseen.has(t)) return;
    this.unseen.get(t)?.close();
    this.unseen.delete(t);
    this.showTitle();
  }

  /** The tab is shown: the offers on it are seen. */
  seen() {
    for (const shown of this.unseen.values()) shown?.close();
    this.unseen.clear();
    this.showTitle();
  }

  showTitle() {
    const offers = [...this.unseen.keys()];
    if (!offers.length) document.title = this.base;
    else if (offers.length === 1) document.title = `(1) offer from ${offers[0].peer} — ${this.base}`;
    else document.title = `(${offers.length}) offers — ${this.base}`;
  }
}
