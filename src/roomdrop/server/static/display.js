// What the person sees: the participants (and which one files go to), the offers waiting
// for an answer, one row per transfer, and the message log (window.roomdrop.messages).
// End to end (keyring.js): each participant's and each transfer's safety number (folded
// under a small "e2e" tag: the room stays compact), and a warning where a known user shows a
// new device key (on the participant, on their offer, on a transfer waiting to go to
// them), with a button that trusts the new key.
// Who has been here (keeping.js): those seen in the room lately who are not in it now are
// listed as away ("away · last seen 14:02"), each with "Keep a file for NAME…" when a
// file can be kept for them (the sender's explicit choice: it opens a file picker of its
// own, whose files the server keeps for them until they join); a file kept for someone
// has Withdraw on its row while it is in the server's store (kept.js).
// It reads transfers and writes only the DOM and its own state (the elements of each
// row, the participant chosen); the buttons call back into the session.
// Counterpart: src/roomdrop/client/display.py

import { PLACEHOLDER, formatBytes, formatDuration, formatPercent } from "./protocol.js";
import { LIVE, carriedBy } from "./transfers.js";

const $ = (sel, root = document) => root.querySelector(sel);

function button(label, testid, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.setAttribute("data-testid", testid);
  b.addEventListener("click", onClick);
  return b;
}

export class Display {
  /**
   * @param {object} room what the participant list shows: user, participants (a Set),
   *   online(), keyring (keyring.js: peer(user), trust(user, key), device, seen), roster
   *   (keeping.js: away(), lastSeenText(user)), keepFor(user, files) (files chosen to
   *   be kept for someone away)
   * @param {function} control (transfer, "file-share-pause" | "file-share-resume" |
   *   "file-share-cancel" | "withdraw"): a transfer's button was pressed
   * @param {import("./attention.js").Attention} attention the tab's title and
   *   notifications, told of each offer shown and removed
   */
  constructor(room, control, attention) {
    this.room = room;
    this.control = control;
    this.attention = attention;
    this.messages = []; // every note, oldest first (window.roomdrop.messages)
    this.selected = null; // the participant files go to
    this.selectedAuto = false; // chosen because they were the only one
    this.rows = new WeakMap(); // transfer → its row's elements
    this.offers = new WeakMap(); // transfer → its offer's element
    this.keysOpen = new Set(); // the participants whose safety number is unfolded
    this.keepActions = new Map(); // away user → their "Keep a file for …" (kept across renders)
  }

  // --- keys -----------------------------------------------------------------------------

  /** The person trusts `key` as `user`'s new device key. */
  trustKey(user, key) {
    this.room.keyring
      .trust(user, key)
      .then(() => this.note(`you trust the new device key of ${user} from now on`))
      .catch((e) => this.note(`cannot trust the key of ${user}: ${e.message || e}`, "error"));
  }

  /** The folded safety number of a participant ({key, seen, number} of keyring.peer). */
  participantKey(user, peer) {
    const box = document.createElement("details");
    box.className = "key";
    box.setAttribute("data-testid", "participant-key");
    box.dataset.user = user;
    box.dataset.seen = peer.seen;
    box.dataset.safetyNumber = peer.number;
    box.open = this.keysOpen.has(user) || peer.seen === "changed";
    box.addEventListener("toggle", () => (box.open ? this.keysOpen.add(user) : this.keysOpen.delete(user)));
    const summary = document.createElement("summary");
    const changed = peer.seen === "changed";
    summary.textContent = changed ? "⚠ new key" : "e2e";
    summary.title = changed ? `${user} shows a new device key` : `end-to-end encrypted with ${user}: safety number ${peer.number}`;
    summary.setAttribute("aria-label", changed ? `${user} shows a new device key` : `safety number with ${user}`);
    const body = document.createElement("div");
    body.className = "key-body";
    if (changed) {
      const warn = document.createElement("p");
      warn.className = "key-warning";
      warn.setAttribute("data-testid", "participant-key-warning");
      warn.textContent = `${user} shows a NEW device key. A new device or a cleared browser does that, and so does someone in the middle: compare the safety number with ${user} (in person or by phone) before you trust it.`;
      body.append(warn);
    }
    const number = document.createElement("span");
    number.className = "safety-number";
    number.setAttribute("data-testid", "safety-number");
    number.textContent = peer.number;
    body.append("Safety number: ", number);
    if (changed) {
      const trust = button("Trust the new key", "trust-new-key", () => this.trustKey(user, peer.key));
      trust.setAttribute("aria-label", `Trust the new key of ${user}`);
      body.append(trust);
    }
    box.append(summary, body);
    return box;
  }

  /** A transfer's or an offer's warning that its peer's key changed, with the button
   * that trusts it (hidden while nothing changed). */
  keyWarning(testid) {
    const box = document.createElement("div");
    box.className = "key-warning";
    box.setAttribute("data-testid", testid);
    box.hidden = true;
    const text = document.createElement("p");
    const trust = button("Trust the new key", `${testid}-trust`, () => {
      if (box.changed) this.trustKey(box.changed.user, box.changed.key);
    });
    box.append(text, trust);
    return box;
  }

  showKeyWarning(box, changed, doing) {
    box.hidden = !changed;
    if (!changed || box.changed === changed) return;
    box.changed = changed;
    box.firstChild.textContent =
      `⚠ ${changed.user} shows a new device key: ${doing} waits until you trust it. A new device or a cleared ` +
      `browser does that, and so does someone in the middle: compare the safety number with ${changed.user} first.`;
    box.title = changed.message; // the keys trusted before, and their safety numbers (also in the log)
  }

  // --- the message log ------------------------------------------------------------------

  note(text, kind = "info") {
    this.messages.push(text);
    const box = $("#messages");
    if (!box) return;
    const li = document.createElement("li");
    li.textContent = text;
    li.className = kind;
    box.prepend(li);
    while (box.children.length > 30) box.lastChild.remove();
  }

  // --- participants ---------------------------------------------------------------------

  /** `user` left: files no longer go to them. */
  unselect(user) {
    if (this.selected === user) this.selected = null;
  }

  /** Files go to `user` from now on (clicked in the list, or in the chooser). */
  choose(user) {
    this.selected = user;
    this.selectedAuto = false;
    this.renderParticipants();
  }

  /** The other participants, sorted. */
  others() {
    const { user: me, participants } = this.room;
    return [...participants].filter((u) => u !== me).sort();
  }

  renderParticipants() {
    const { user: me, participants } = this.room;
    const list = $("#participants");
    list.textContent = "";
    const others = this.others();
    // The choice stays while that person is here, whoever else comes and goes; with no
    // choice and one other participant, files go to them (picker.js asks otherwise).
    if (this.selected && !participants.has(this.selected)) this.selected = null;
    if (!this.selected && others.length === 1) {
      this.selected = others[0];
      this.selectedAuto = true;
    }
    for (const user of others) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "participant";
      b.dataset.testid = "participant";
      b.setAttribute("data-testid", "participant");
      b.dataset.user = user;
      b.textContent = user;
      b.setAttribute("aria-pressed", String(this.selected === user));
      b.addEventListener("click", () => this.choose(user));
      li.append(b);
      const peer = this.room.keyring?.peer(user);
      if (peer) {
        b.title = peer.seen === "changed" ? `${user} shows a new device key` : `safety number ${peer.number}`;
        li.classList.toggle("key-changed", peer.seen === "changed");
        li.append(this.participantKey(user, peer));
      }
      list.append(li);
    }
    for (const user of this.away()) list.append(this.awayParticipant(user));
    $("#me").textContent = me || "";
    $("#nobody").hidden = others.length > 0;
    $("#recipient").textContent = this.selected
      ? `Files go to ${this.selected}.`
      : "Click a participant to choose whom files go to (or pick files and say whom).";
    $("#file-input").disabled = !this.room.online();
  }

  /** Those seen lately who are away, sorted. */
  away() {
    const { user: me, participants } = this.room;
    return this.room.roster?.away(participants, me) || [];
  }

  /** Whether a file can be kept on the server for `user`, who is away: they published a
   * device key in the room (it is sealed to it), this browser has one, and it is here. */
  canKeepFor(user) {
    const keyring = this.room.keyring;
    return Boolean(keyring?.device && keyring.seen.has(user) && this.room.online());
  }

  /** Those away for whom a file can be kept, sorted (the chooser offers them too). */
  keepable() {
    return this.away().filter((user) => this.canKeepFor(user));
  }

  /** Someone seen in the room lately who is away: when they were last here and, if a
   * file can be kept for them (canKeepFor), the action that keeps files for them. */
  awayParticipant(user) {
    const li = document.createElement("li");
    li.className = "away";
    const name = document.createElement("span");
    name.className = "participant away";
    name.setAttribute("data-testid", "participant-away");
    name.dataset.user = user;
    name.textContent = user;
    const when = document.createElement("span");
    when.className = "last-seen";
    when.setAttribute("data-testid", "participant-last-seen");
    when.textContent = this.room.roster.lastSeenText(user);
    li.append(name, when);
    if (this.canKeepFor(user)) li.append(this.keepAction(user));
    else when.title = `nothing can be kept for ${user}: no device key of theirs (or of this browser) to seal it with`;
    return li;
  }

  /** "Keep a file for NAME…": a file picker whose files go to the server's store. */
  keepAction(user) {
    let label = this.keepActions.get(user);
    if (label) return label;
    label = document.createElement("label");
    label.className = "button keep";
    label.setAttribute("data-testid", "keep-for");
    label.dataset.user = user;
    label.textContent = `Keep a file for ${user}…`;
    label.title = `${user} is away: the server keeps the file, end-to-end encrypted, until they join, then delivers and deletes it`;
    const input = document.createElement("input");
    input.type = "file";
    input.multiple = true;
    input.hidden = true;
    input.setAttribute("data-testid", "keep-input");
    input.dataset.user = user;
    input.addEventListener("change", () => {
      const files = [...input.files];
      input.value = "";
      if (files.length) this.room.keepFor(user, files);
    });
    label.append(input);
    this.keepActions.set(user, label);
    return label;
  }

  // --- offers ---------------------------------------------------------------------------

  /** An offer waits for the person's answer; with `cannot` (why this page cannot take
   * it: the room requires a malware scan) it is shown with that reason and no Accept. */
  showOffer(t, accept, reject, cannot = null) {
    if (this.offers.has(t)) return this.renderOffer(t);
    const li = document.createElement("li");
    li.className = "offer";
    li.setAttribute("data-testid", "offer");
    li.dataset.transferId = t.transfer_id;
    const text = document.createElement("p");
    const who = document.createElement("strong");
    who.textContent = t.peer;
    const name = document.createElement("strong");
    name.textContent = t.filename;
    text.append(who, " offers ", name, ` (${formatBytes(t.file_size)}, ${t.file_size.toLocaleString()} bytes, ${t.mime_type})`);
    const yes = button("Accept", "offer-accept", accept);
    yes.classList.add("primary");
    yes.setAttribute("aria-label", `Accept ${t.filename} from ${t.peer}`);
    const no = button("Reject", "offer-reject", reject);
    no.setAttribute("aria-label", `Reject ${t.filename} from ${t.peer}`);
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(yes, no);
    const how = document.createElement("p");
    how.className = "e2e";
    how.setAttribute("data-testid", "offer-e2e");
    if (t.e2e) {
      const number = document.createElement("span");
      number.className = "safety-number";
      number.setAttribute("data-testid", "safety-number");
      number.textContent = t.safety_number;
      how.append("End-to-end encrypted; safety number ", number);
    } else {
      how.classList.add("clear");
      how.textContent = "⚠ not end-to-end encrypted: the server can read it";
    }
    li.append(text, how, this.keyWarning("offer-key-warning"), actions);
    if (t._.kept) {
      const kept = document.createElement("p");
      kept.className = "kept";
      kept.setAttribute("data-testid", "offer-kept");
      kept.textContent = `Kept for you on the server while you were away (${t.peer} may have left).`;
      li.insertBefore(kept, how);
    }
    if (cannot) {
      const why = document.createElement("p");
      why.className = "scan-required";
      why.setAttribute("data-testid", "offer-scan-required");
      why.textContent = cannot;
      li.insertBefore(why, actions);
    }
    li.acceptBtn = yes;
    li.cannot = Boolean(cannot);
    this.offers.set(t, li);
    this.renderOffer(t);
    $("#offers").append(li);
    $("#offers-section").hidden = false;
    this.attention.offered(t);
  }

  /** The offer's warning and Accept, as its sender's key stands (trusted or not). */
  renderOffer(t) {
    const li = this.offers.get(t);
    if (!li) return;
    this.showKeyWarning(li.querySelector(".key-warning"), t._.keyChanged, "accepting");
    li.acceptBtn.disabled = Boolean(t._.keyChanged) || li.cannot;
  }

  /** Whether the room requires a malware scan of received files (which a page cannot do). */
  showScanRequired(required) {
    $("#scan-required").hidden = !required;
  }

  removeOffer(t) {
    const li = this.offers.get(t);
    if (li) {
      li.remove();
      this.offers.delete(t);
      this.attention.answered(t);
    }
    $("#offers-section").hidden = $("#offers").children.length === 0;
  }

  // --- transfers ------------------------------------------------------------------------

  /** Take `t`'s row off the page (it is shown again, as a new row, at its next render). */
  forget(t) {
    const row = this.rows.get(t);
    if (row) {
      row.el.remove();
      this.rows.delete(t);
    }
  }

  build(t) {
    const li = document.createElement("li");
    li.className = "transfer";
    li.setAttribute("data-testid", "transfer");
    li.innerHTML = `
    <div class="head">
      <span class="dir" data-testid="transfer-peer"></span>
      <strong class="name"></strong>
    </div>
    <div class="tags">
      <span class="status" data-testid="transfer-status"></span>
      <span class="transport" data-testid="transfer-transport"></span>
      <details class="safety" data-testid="transfer-e2e" hidden>
        <summary title="end-to-end encrypted">e2e</summary>
        <span class="safety-number" data-testid="transfer-safety-number"></span>
      </details>
    </div>
    <progress data-testid="transfer-progress" max="100" value="0"></progress>
    <div class="stats">
      <span class="percent" data-testid="transfer-percent"></span>
      <span class="bytes"></span>
      <span class="speed"></span>
      <span class="eta"></span>
    </div>
    <p class="note"></p>
    <div class="actions"></div>`;
    li.querySelector(".tags").after(this.keyWarning("transfer-key-warning"));
    const actions = li.querySelector(".actions");
    const pause = button("Pause", "transfer-pause", () => this.control(t, "file-share-pause"));
    const resume = button("Resume", "transfer-resume", () => this.control(t, "file-share-resume"));
    const cancel = button("Cancel", "transfer-cancel", () => this.control(t, "file-share-cancel"));
    const withdraw = button("Withdraw", "transfer-withdraw", () => this.control(t, "withdraw"));
    withdraw.hidden = true;
    const save = document.createElement("a");
    save.className = "button primary";
    save.setAttribute("data-testid", "transfer-save");
    save.textContent = "Save";
    save.hidden = true;
    actions.append(pause, resume, cancel, withdraw, save);
    $("#transfers").prepend(li);
    $("#transfers-section").hidden = false;
    return { el: li, pauseBtn: pause, resumeBtn: resume, cancelBtn: cancel, withdrawBtn: withdraw, saveLink: save, labelled: null };
  }

  render(t) {
    let row = this.rows.get(t);
    if (!row) {
      row = this.build(t);
      this.rows.set(t, row);
    }
    const el = row.el;
    if (el.dataset.transferId !== t.transfer_id) el.dataset.transferId = t.transfer_id;
    el.dataset.status = t.status;
    el.dataset.direction = t.direction;
    if (el.dataset.peer !== t.peer) el.dataset.peer = t.peer;
    const set = (sel, text) => {
      const node = el.querySelector(sel);
      if (node.textContent !== text) node.textContent = text;
    };
    if (row.labelled !== t.filename) {
      row.labelled = t.filename;
      row.pauseBtn.setAttribute("aria-label", `Pause ${t.filename}`);
      row.resumeBtn.setAttribute("aria-label", `Resume ${t.filename}`);
      row.cancelBtn.setAttribute("aria-label", `Cancel ${t.filename}`);
      row.withdrawBtn.setAttribute("aria-label", `Withdraw ${t.filename}`);
      row.withdrawBtn.title = `the server deletes ${t.filename} and ${t.peer} is not offered it`;
      row.saveLink.setAttribute("aria-label", `Save ${t.filename}`);
    }
    set(".dir", t.direction === "send" ? `to ${t.peer}` : `from ${t.peer}`);
    set(".name", t.filename);
    set(".status", t.status);
    const transport = carriedBy(t);
    set(".transport", transport || "");
    el.querySelector(".transport").hidden = !transport;
    const safety = el.querySelector(".safety");
    safety.hidden = !t.e2e;
    set(".safety-number", t.safety_number || "");
    if (t.safety_number && el.dataset.safetyNumber !== t.safety_number) {
      el.dataset.safetyNumber = t.safety_number;
      safety.querySelector("summary").title = `end-to-end encrypted: safety number ${t.safety_number}`;
    }
    this.showKeyWarning(el.querySelector(".key-warning"), t.direction === "send" && !t._.final ? t._.keyChanged : null, "sending");
    const bar = el.querySelector("progress");
    const hashing = t.direction === "send" && t._.hashing < 1 && !t._.final && !t._.orphan;
    let percent = t.progress_percent;
    if (hashing) percent = 0;
    bar.value = percent;
    const percentText = formatPercent(percent);
    if (bar.textContent !== percentText) bar.textContent = percentText;
    bar.setAttribute("aria-label", `${t.filename}: ${percentText}`);
    set(".percent", percentText);
    set(".bytes", `${formatBytes(t.bytes_transferred)} of ${formatBytes(t.file_size)}`);
    // active: a placeholder until the first half second of samples gives a speed
    const active = t.status === "active" && !t._.final;
    set(".speed", active ? `${t.speed_bps ? formatBytes(t.speed_bps) : PLACEHOLDER}/s` : "");
    set(".eta", active ? `ETA ${formatDuration(t.speed_bps ? t.eta_seconds : null)}` : "");
    let noteText = t._.note || "";
    if (hashing) {
      noteText = `computing sha256… ${Math.floor(t._.hashing * 100)} %`;
    } else if (t.error) {
      noteText = t.error;
    }
    set(".note", noteText);
    el.querySelector(".note").classList.toggle("error", Boolean(t.error) && t.status !== "completed");
    const live = !t._.final && LIVE.has(t.status);
    row.pauseBtn.disabled = !(live && t.status === "active");
    row.resumeBtn.disabled = !(live && t.status === "paused");
    row.cancelBtn.disabled = !live;
    // kept for someone away, all in the server's store: Withdraw instead of Cancel
    const kept = t.direction === "send" && t.status === "stored";
    row.cancelBtn.hidden = kept;
    row.withdrawBtn.hidden = !kept;
    row.withdrawBtn.disabled = Boolean(t._.withdrawing);
    const save = row.saveLink;
    const ready = t.direction === "receive" && t.status === "completed" && Boolean(t._.url);
    if (ready && save.getAttribute("href") !== t._.url) {
      save.href = t._.url;
      save.download = t.filename;
    }
    save.hidden = !ready;
  }
}
