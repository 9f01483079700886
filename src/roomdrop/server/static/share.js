// The room's heading and its share link (page only): shown once the page has joined: the
// link (the page's address with ?room=, which fills the sign-in form for whoever opens
// it), on one line, cut short with an ellipsis where it does not fit (a phone), a Copy
// button that copies the whole of it, and its QR code for a phone to scan
// (vendor/qrcode-generator), beside the link, or folded below it on a narrow screen.

import qrcode from "./vendor/qrcode-generator/qrcode.js";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const QUIET = 4; // modules of white around the code, as the standard asks

/** `text` as an SVG QR code (one path of dark modules on white), drawn into `svg`. */
export function drawQr(svg, text) {
  const qr = qrcode(0, "M"); // the smallest version that holds it
  qr.addData(text, "Byte");
  qr.make();
  const n = qr.getModuleCount();
  let d = "";
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) d += `M${c + QUIET} ${r + QUIET}h1v1h-1z`;
  }
  const size = n + 2 * QUIET;
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.textContent = "";
  const back = document.createElementNS(SVG, "rect");
  back.setAttribute("width", String(size));
  back.setAttribute("height", String(size));
  back.setAttribute("fill", "#fff");
  const dark = document.createElementNS(SVG, "path");
  dark.setAttribute("d", d);
  dark.setAttribute("fill", "#000");
  svg.append(back, dark);
}

export class Share {
  /** @param {function} note (text, kind): a line in the message log */
  constructor(note) {
    this.note = note;
  }

  init() {
    $("#share-copy").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText($("#share-link").href);
        this.note("link copied");
      } catch {
        this.note("copy the link by hand: your browser refused the clipboard", "error");
      }
    });
  }

  show(room) {
    $("#room").hidden = false;
    $("#room-name").textContent = room;
    const share = new URL(location.origin + location.pathname);
    share.searchParams.set("room", room);
    const url = share.toString();
    const link = $("#share-link");
    link.href = url;
    link.textContent = url;
    link.title = url;
    const qr = $("#share-qr");
    const box = qr.closest("details");
    try {
      drawQr(qr, url);
      qr.setAttribute("aria-label", `QR code of ${url}`);
      // unfolded where there is room beside the link; on a phone, one tap away
      if (box.hidden) box.open = matchMedia("(min-width: 40rem)").matches;
      box.hidden = false;
    } catch (e) {
      console.warn("no QR code", e);
      box.hidden = true;
    }
  }
}
