// Choosing files to send and whom they go to (page only; the CLI takes paths and --to):
// the file input, files dropped anywhere on the page while it is connected, and the
// chooser. Picked files go to the participant chosen in the list (display.js); when
// none is chosen (several others are here and none was clicked), the chooser asks whom
// they go to, listing the participants as they come and go, instead of dropping them.

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
   * @param {object} opts {others() the other participants, sorted, chose(user, files)
   *   the person chose whom the waiting files go to}
   */
  constructor({ others, chose }) {
    this.others = others;
    this.chose = chose;
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
    $("#chooser-title").textContent = others.length
      ? `Send ${what} to whom?`
      : `Send ${what} to whom? Nobody else is here yet: choose once someone joins.`;
    const list = $("#chooser-list");
    list.textContent = "";
    for (const user of others) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "participant";
      b.setAttribute("data-testid", "chooser-participant");
      b.dataset.user = user;
      b.textContent = user;
      b.setAttribute("aria-label", `Send ${what} to ${user}`);
      b.addEventListener("click", () => {
        const files = this.files;
        this.files = [];
        this.update();
        this.chose(user, files);
      });
      li.append(b);
      list.append(li);
    }
  }
}
