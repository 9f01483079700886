// The room's heading and its share link (page only): shown once the page has joined, with
// a button that copies the link (the page's address with ?room=, which fills the
// sign-in form for whoever opens it).

const $ = (sel) => document.querySelector(sel);

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
    const link = $("#share-link");
    link.href = share.toString();
    link.textContent = share.toString();
  }
}
