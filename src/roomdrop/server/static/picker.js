// Choosing files to send and whom they go to (page only; the CLI takes paths and --to):
// the file input, files dropped anywhere on the page while it is connected, and the
// chooser. Picked files go to the participant chosen in the list (display.js); when
// none is chosen (several others are here and none was clicked), the chooser asks whom
// they go to, listing the participants as they come and go, instead of dropping them.
// It also lists those away for whom a file can be kept (display.js keepable: the same
// rule as "Keep a file for NAME…"): "Keep for NAME" has the server keep the files for
// them until they join (keeping.js), the sender's explicit choice as there.
// Send to everyone (issue 17; the CLI's `send --to @room`): "Everyone here (N)" in the
// chooser when two or more others are here, and "Send to everyone here…" by the
// participant list (a file picker of its own) whenever anyone else is: the files go to
// every other participant in the room at that moment, each receiver a transfer of its
// own per file (session.js sendToEveryone → outgoing.js enqueueFiles once per receiver:
// its own accept or reject, progress, resume and result; the receivers at once, each
// one's files in turn). Each transfer reads slices of the one File as it sends, and the
// File is hashed once for all of them (hashing.js). With nobody else here neither is
// offered.

const $ = (sel) => document.querySelector(sel);

/**
 * @param {object} opts {online() connected to the room, send(files)}
 */
export function watchFiles({ online, send }) {
  $("#file-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (files.length) send(files);
  });
  const drop = document.body;
  drop.addEventListener("dragover", (event) => {
    if (!online()) return;
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", (event) => {
    if (event.target === drop || !drop.contains(event.relatedTarget)) drop.classList.remove("dragging");
  });
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    if (!online()) return;
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) send(files);
  });
}

/** "Send these files to whom?": files picked with no participant chosen wait here. */
export class Chooser {
  /**
   * @param {object} opts {others() the other participants, sorted, keepable() those
   *   away for whom files can be kept, sorted, chose(user, files) the person chose whom
   *   the waiting files go to, keep(user, files) or chose to keep them for `user`,
   *   everyone(files) or to send them to every other participant here}
   */
  constructor({ others, keepable, chose, keep, everyone }) {
    this.others = others;
    this.keepable = keepable;
    this.chose = chose;
    this.keep = keep;
    this.everyone = everyone;
    this.files = []; // waiting for a recipient
  }

  init() {
    $("#chooser-cancel").addEventListener("click", () => this.close());
  }

  get open() {
    return this.files.length > 0;
  }

  /** Ask whom `files` go to (added to those already waiting). */
  ask(files) {
    this.files.push(...files);
    this.update();
    $("#chooser-list button")?.focus();
  }

  close() {
    this.files = [];
    this.update();
  }

  /** Show the waiting files and the participants as they are now. */
  update() {
    const box = $("#chooser");
    box.hidden = !this.open;
    if (!this.open) return;
    const names = this.files.map((f) => f.name);
    const what = names.length === 1 ? names[0] : `${names.length} files (${names.slice(0, 3).join(", ")}${names.length > 3 ? ", …" : ""})`;
    const others = this.others();
    const away = this.keepable();
    let title = `Send ${what} to whom?`;
    if (!others.length) {
      title += away.length
        ? " Nobody else is here: the server can keep it for someone away until they join."
        : " Nobody else is here yet: choose once someone joins.";
    }
    $("#chooser-title").textContent = title;
    const list = $("#chooser-list");
    list.textContent = "";
    if (others.length > 1) {
      const label = `Send ${what} to everyone here: ${others.join(", ")}`;
      const all = this.option("@room", `Everyone here (${others.length})`, "chooser-everyone", label, (_, files) => this.everyone(files));
      all.firstChild.classList.add("everyone");
      list.append(all);
    }
    for (const user of others) list.append(this.option(user, user, "chooser-participant", `Send ${what} to ${user}`, this.chose));
    for (const user of away) {
      list.append(this.option(user, `Keep for ${user}`, "chooser-keep", `Keep ${what} on the server for ${user}, who is away`, this.keep));
    }
  }

  /** One choice: a button that hands the waiting files to `then(user, files)`. */
  option(user, text, testid, label, then) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = testid === "chooser-keep" ? "participant keep" : "participant";
    b.setAttribute("data-testid", testid);
    b.dataset.user = user;
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", () => {
      const files = this.files;
      this.files = [];
      this.update();
      then(user, files);
    });
    li.append(b);
    return li;
  }
}

/** "Send to everyone here…" by the participant list: a file picker whose files go to
 * every other participant here when they are picked (`send(files)`); shown only while
 * someone else is here (`others`, sorted). */
export function watchEveryone(send) {
  $("#everyone-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (files.length) send(files);
  });
}

export function showEveryone(others, online) {
  const label = $("#everyone");
  label.hidden = !others.length || !online;
  label.title = others.length ? `Each file goes to each of: ${others.join(", ")} (a transfer for each)` : "";
  $("#everyone-input").disabled = label.hidden;
}
