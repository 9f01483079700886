// The sign-in form (page only; the CLI takes its token from its settings): a token, or a
// display name for a guest token where the server allows guests (GET /webrtc/guest),
// and the room. A guest's token is remembered per name in this browser (localStorage),
// so that a reload signs in as the same guest and can take its transfers up again; the
// form is filled from the link (?room=, ?name=) and this tab's last name. "Leave room"
// goes back to the form; "Sign out" also forgets the remembered guests and the token.

import { userOfToken } from "./protocol.js";

const $ = (sel) => document.querySelector(sel);

const GUEST_KEY = "roomdrop-guests"; // name → {token, user}, in localStorage
const NAME_KEY = "roomdrop-name"; // this tab's last name, in sessionStorage
const ROOM = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const NAME = /^[A-Za-z0-9._ -]{1,64}$/;

function claimsOf(token) {
  try {
    const b64 = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

function rememberedGuest(name) {
  try {
    const last = (JSON.parse(localStorage.getItem(GUEST_KEY) || "{}") || {})[name];
    if (!last || !last.token || !last.user) return null;
    const exp = claimsOf(last.token).exp;
    if (typeof exp === "number" && exp * 1000 < Date.now() + 60000) return null;
    return last;
  } catch {
    return null;
  }
}

function rememberGuest(name, guest) {
  try {
    const guests = JSON.parse(localStorage.getItem(GUEST_KEY) || "{}");
    if (guest) guests[name] = guest;
    else delete guests[name];
    localStorage.setItem(GUEST_KEY, JSON.stringify(guests));
  } catch {}
}

export class SignIn {
  /**
   * @param {object} session join(token, user, room) (async: connected, or throws),
   *   entered(room) (the room is shown), refused() (back to the form), leave() (async:
   *   out of the room), leaveBehind(why) (the live transfers end here)
   * @param {import("./http.js").ServerApi} api
   * @param {function} note (text, kind): a line in the message log
   */
  constructor(session, api, note) {
    this.session = session;
    this.api = api;
    this.note = note;
  }

  /** Fill the form and show the guest fields if the server allows guests. */
  async init() {
    const params = new URLSearchParams(location.search);
    if (params.get("room")) $("#room-input").value = params.get("room");
    if (params.get("name")) $("#name-input").value = params.get("name");
    try {
      const last = sessionStorage.getItem(NAME_KEY);
      if (last && !$("#name-input").value) $("#name-input").value = last;
    } catch {}
    $("#signin-form").addEventListener("submit", (event) => this.signIn(event));
    $("#leave-button").addEventListener("click", () => this.leave());
    $("#signout-button").addEventListener("click", () => this.signOut());
    let guests = false;
    try {
      guests = Boolean((await this.api.guestPolicy()).enabled);
    } catch {}
    $("#guest-fields").hidden = !guests;
    $("#guest-off").hidden = guests;
    $("#token-optional").hidden = !guests;
  }

  /** "Leave room": back to the form, filled as it was (Join takes the room up again). */
  async leave() {
    await this.session.leave();
    this.showForm();
  }

  /** "Sign out": leave the room and forget who this browser signed in as (its
   * remembered guests, this tab's last name, the token typed). */
  async signOut() {
    await this.session.leave();
    this.session.leaveBehind("signed out");
    this.session.refused();
    try {
      localStorage.removeItem(GUEST_KEY);
      sessionStorage.removeItem(NAME_KEY);
    } catch {}
    $("#name-input").value = "";
    $("#token-input").value = "";
    this.note("signed out: this browser no longer remembers you");
    this.showForm();
  }

  showForm() {
    $("#room").hidden = true;
    $("#signin").hidden = false;
    $("#join-button").disabled = false;
  }

  async signIn(event) {
    event.preventDefault();
    const joinButton = $("#join-button");
    const token = $("#token-input").value.trim();
    const name = $("#name-input").value.trim();
    const room = $("#room-input").value.trim();
    if (!ROOM.test(room)) {
      this.note("a room name is 1–128 letters, digits, '.', '_' or '-', starting with a letter or digit", "error");
      return;
    }
    joinButton.disabled = true;
    try {
      let credentials;
      if (token) {
        const user = userOfToken(token);
        if (!user) throw new Error("that token is not a JWT with a user id (sub)");
        credentials = { token, user };
      } else if (name) {
        if (!NAME.test(name)) {
          throw new Error("a name is 1–64 letters, digits, spaces, '.', '_' or '-'");
        }
        // the same name in the same browser is the same guest (so a reload can take its
        // transfers up again), as long as the token it got is still valid
        credentials = rememberedGuest(name);
        if (!credentials) {
          const answer = await this.api.guestToken(name);
          credentials = { token: answer.token, user: answer.user_id };
          rememberGuest(name, credentials);
        }
      } else {
        throw new Error("enter a name or paste a token");
      }
      if (!token) {
        try {
          sessionStorage.setItem(NAME_KEY, name);
        } catch {}
      }
      const url = new URL(location.href);
      url.searchParams.set("room", room);
      history.replaceState(null, "", url);
      await this.session.join(credentials.token, credentials.user, room);
      $("#signin").hidden = true;
      this.session.entered(room);
    } catch (e) {
      // a remembered guest the server refused: a new one next time
      if (!token && name) rememberGuest(name, null);
      this.session.refused();
      this.note(`cannot join: ${e.message || e}`, "error");
      joinButton.disabled = false;
    }
  }
}
