// The chat page: rooms (instances), a user name, messages, @bot replies streaming in.
import { createStore } from "/_ss/static/synced-store.js";

const config = JSON.parse(document.getElementById("synced-store-config").textContent);
const params = new URLSearchParams(location.search);
const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const USER_RE = /^[^/\s]{1,64}$/;

function pick(value, re, fallback) {
  return value && re.test(value) ? value : fallback;
}

const room = pick(params.get("room") || localStorage.getItem("ss-chat-room"), ROOM_RE, "general");
const user = pick(params.get("user") || localStorage.getItem("ss-chat-user"), USER_RE,
  "guest-" + Math.random().toString(36).slice(2, 6));
localStorage.setItem("ss-chat-room", room);
localStorage.setItem("ss-chat-user", user);

const $ = (id) => document.getElementById(id);
const els = {
  list: $("messages"), empty: $("empty"), loading: $("loading"), status: $("status"),
  engine: $("engine"), form: $("composer"), text: $("text"), toast: $("toast"),
  roomForm: $("room-form"), roomInput: $("room-input"), userForm: $("user-form"), userInput: $("user-input"),
};
document.title = `#${room} — ${config.title}`;
els.roomInput.value = room;
els.userInput.value = user;
els.text.placeholder = `Message #${room} — mention @bot for a reply`;

function go(newRoom, newUser) {
  const q = new URLSearchParams({ room: newRoom, user: newUser });
  location.search = q.toString();
}
els.roomForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const v = els.roomInput.value.trim();
  if (ROOM_RE.test(v)) go(v, user); else showToast("Room names: letters, digits, . _ -");
});
els.userForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const v = els.userInput.value.trim();
  if (USER_RE.test(v)) go(room, v); else showToast("Names cannot contain spaces or /");
});

let toastTimer = null;
function showToast(text) {
  els.toast.textContent = text;
  els.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { els.toast.hidden = true; }, 5000);
}

// Message ids sort by time, so the table's key order is the conversation order.
let seq = 0;
function newMessageId() {
  const t = Date.now().toString(36).padStart(9, "0");
  seq = (seq + 1) % 1296;
  return `m${t}${seq.toString(36).padStart(2, "0")}${Math.random().toString(36).slice(2, 6)}`;
}

const store = await createStore(config, { instanceId: room, token: user, userId: user });
window.chat = { store, room, user };

// -- status ------------------------------------------------------------------------------

function renderStatus(s) {
  els.status.dataset.status = s;
  const text = s === "ended" ? `ended: ${store.endReason}` : s;
  els.status.querySelector("span").textContent = text;
}
store.on("status", renderStatus);
renderStatus(store.status);

function renderEngine(err) {
  if (store.optimistic) {
    document.body.dataset.mode = "optimistic";
    els.engine.textContent = "Python engine ready";
    els.engine.title = "Mutators run in the page (Pyodide): messages show at once and sync in the background.";
  } else if (err || !config.pyodide || params.has("nopy")) {
    document.body.dataset.mode = "server";
    els.engine.textContent = "server mode";
    els.engine.title = err ? `Python engine failed to load: ${err}` : "No Pyodide build: messages appear when the server confirms them.";
  }
}
store.on("ready", renderEngine);
renderEngine(null);

// A mutation the server refused for good: its optimistic effects are already rolled back. An
// edit, stop or delete of a message is shown as refused on that message.
const REFUSABLE = { updateMessage: "Edit", cancelMessage: "Stop", deleteMessage: "Delete" };
store.on("failed", (err, m) => {
  const what = m && REFUSABLE[m.name];
  if (what && m.args && typeof m.args.id === "string") {
    refuse(m.args.id, what, err.message.replace(/^\w+: /, ""));
  } else {
    showToast(`A message was rejected by the server: ${err.message}`);
  }
});

// -- messages ----------------------------------------------------------------------------

let firstRender = true;
const nodes = new Map();
const refusals = new Map(); // message id -> {text, timer}: a refused edit/stop/delete, shown a while

// Show on message `id` (and in the toast) that `what` ("Edit", "Stop", "Delete") was refused.
function refuse(id, what, reason) {
  showToast(`${what} refused: ${reason}`);
  const old = refusals.get(id);
  if (old) clearTimeout(old.timer);
  const timer = setTimeout(() => {
    refusals.delete(id);
    const li = nodes.get(id);
    if (li) showRefusal(li, null);
  }, 8000);
  refusals.set(id, { text: `✗ ${what} refused: ${reason}`, timer });
  const li = nodes.get(id);
  if (li) showRefusal(li, refusals.get(id).text);
}

function showRefusal(li, text) {
  let note = li.querySelector(".refused-note");
  li.dataset.refused = String(!!text);
  if (!text) { if (note) note.remove(); return; }
  if (!note) {
    note = document.createElement("div");
    note.className = "refused-note";
    note.setAttribute("role", "status");
    li.appendChild(note);
  }
  note.textContent = text;
}

// Run an edit, stop or delete of message `id`. Resolves to {ok: true} once applied (locally
// with the engine), or {ok: false, error} if refused at once (the engine ran the mutator and it
// raised: not your message). A refusal by the server arrives later, through "failed".
async function changeMessage(what, name, args) {
  try {
    const res = await store.mutate(name, args);
    res.confirmed.catch(() => {}); // shown by the "failed" listener
    return { ok: true };
  } catch (err) {
    refuse(args.id, what, err.message);
    return { ok: false, error: err.message, kind: err.kind };
  }
}
const deleteMessage = (id) => changeMessage("Delete", "deleteMessage", { id });
const cancelMessage = (id) => changeMessage("Stop", "cancelMessage", { id });
const editMessage = (id, text, status = "complete") =>
  changeMessage("Edit", "updateMessage", { id, text, status });
Object.assign(window.chat, { deleteMessage, cancelMessage, editMessage });

function messageNode(id) {
  let li = nodes.get(id);
  if (!li) {
    li = document.createElement("li");
    li.className = "msg";
    li.dataset.id = id;
    li.innerHTML = '<div class="meta"><span class="who"></span><span class="mark"></span>' +
      '<button class="stop" type="button" hidden>stop</button>' +
      '<button class="del" type="button" title="Delete this message" hidden>delete</button>' +
      '</div><div class="bubble"></div>';
    li.querySelector(".stop").addEventListener("click", () => cancelMessage(id));
    li.querySelector(".del").addEventListener("click", () => deleteMessage(id));
    nodes.set(id, li);
    const r = refusals.get(id);
    if (r) showRefusal(li, r.text);
  }
  return li;
}

// Whether this page's user owns a message: the sender of a user message, the user who asked
// for a bot reply (examples/chat/mutators.py has the rules; the server enforces them).
function ownedByMe(m) {
  return m.role === "assistant" ? m.requestedBy === store.userId : m.senderId === store.userId;
}

function fill(li, { who, text, role, status, mark, markClass, mine, owned, ghost, errorNote }) {
  li.classList.toggle("mine", !!mine);
  li.classList.toggle("assistant", role === "assistant");
  li.classList.toggle("ghost", !!ghost);
  li.dataset.role = role;
  li.dataset.status = status || "";
  li.dataset.pending = String(markClass === "pending" || markClass === "sending");
  li.querySelector(".who").textContent = who;
  const m = li.querySelector(".mark");
  m.textContent = mark;
  m.className = "mark " + markClass;
  li.querySelector(".stop").hidden = !(owned && role === "assistant" && status === "incomplete" &&
    config.mutators.includes("cancelMessage"));
  li.querySelector(".del").hidden = !(owned && !ghost && config.mutators.includes("deleteMessage"));
  const b = li.querySelector(".bubble");
  if (b.textContent !== text) b.textContent = text;
  let note = li.querySelector(".error-note");
  if (errorNote) {
    if (!note) {
      note = document.createElement("div");
      note.className = "error-note";
      li.appendChild(note);
    }
    note.textContent = errorNote;
  } else if (note) {
    note.remove();
  }
}

// Display names by user id, from the room's $user_info system table (server-written).
let names = new Map();
let lastRender = null;
const nameOf = (uid) => names.get(uid) || uid;

function render(rows, info) {
  lastRender = [rows, info];
  const main = els.list.parentElement;
  const atBottom = main.scrollHeight - main.scrollTop - main.clientHeight < 40;
  const seen = new Set();
  const ordered = [];
  for (const row of rows) {
    const m = row.value;
    const li = messageNode(row.key);
    seen.add(row.key);
    const mine = m.role === "user" && m.senderId === store.userId;
    let mark = "";
    let markClass = "";
    if (row.pending) { mark = "● pending"; markClass = "pending"; }
    else if (m.role === "user") { mark = "✓ sent"; markClass = "confirmed"; }
    else if (m.status === "incomplete") { mark = "streaming…"; markClass = "pending"; }
    else if (m.status === "complete") { mark = "✓"; markClass = "confirmed"; }
    else if (m.status === "error") { mark = "✗ failed"; markClass = "failed"; }
    else if (m.status === "cancelled") { mark = "stopped"; markClass = "sending"; }
    fill(li, {
      who: m.role === "user" ? (mine ? `${nameOf(m.senderId)} (you)` : nameOf(m.senderId)) : `@${m.senderId}`,
      text: m.text, role: m.role, status: m.status, mark, markClass, mine, owned: ownedByMe(m),
      errorNote: m.status === "error" ? "⚠ The bot reply failed." : (m.status === "cancelled" ? "Reply cancelled." : ""),
    });
    ordered.push(li);
  }
  // Without the engine, messages sent but not yet confirmed show as "sending" ghosts.
  if (!info.optimistic) {
    for (const p of info.pending) {
      if (p.name !== "sendMessage" || seen.has(p.args.id)) continue;
      const li = messageNode(p.args.id);
      seen.add(p.args.id);
      fill(li, { who: `${nameOf(store.userId)} (you)`, text: p.args.text, role: "user", status: "",
        mark: "sending…", markClass: "sending", mine: true, owned: true, ghost: true });
      ordered.push(li);
    }
  }
  for (const [id, li] of nodes) {
    if (!seen.has(id)) { li.remove(); nodes.delete(id); }
  }
  ordered.forEach((li, i) => {
    if (els.list.children[i] !== li) els.list.insertBefore(li, els.list.children[i] || null);
  });
  const haveData = info.fromServer || store.restoredFromCache || rows.length > 0;
  els.loading.hidden = haveData;
  els.empty.hidden = !haveData || ordered.length > 0;
  if (haveData && firstRender) {
    firstRender = false;
    document.body.dataset.rendered = "true";
    performance.mark("synced-store:first-messages");
  }
  if (atBottom || firstRender) main.scrollTop = main.scrollHeight;
}

store.subscribe({ table: "messages" }, render);
store.subscribe({ table: "$user_info" }, (rows) => {
  names = new Map(rows.map((r) => [r.key, r.value.display_name]));
  if (lastRender) render(...lastRender);
});

// The room's history: a new page receives the latest 50 messages (the schema's pull_windows)
// and pages back 50 at a time once Python (the engine) runs.
const older = $("older");
const showOlder = () => { older.hidden = !store.optimistic; };
store.on("ready", showOlder);
showOlder();
older.addEventListener("click", async () => {
  older.disabled = true;
  try {
    const added = await store.loadOlder("messages", { limit: 50 });
    if (!added) { older.textContent = "No older messages"; return; }
  } catch (err) {
    showToast(`Could not load older messages: ${err.message}`);
  }
  older.disabled = false;
});

// -- sending -----------------------------------------------------------------------------

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value.trim();
  if (!text) return;
  const id = newMessageId();
  const args = { id, text };
  if (/^@(\S+)\s/.test(text + " ")) args.botMessageId = id + "r";
  if (/^@\S+$/.test(text)) args.text = text + " ";
  els.text.value = "";
  store.mutate("sendMessage", args).then(
    (res) => res.confirmed.catch((err) => showToast(`Not sent: ${err.message}`)),
    (err) => {
      if (!els.text.value) els.text.value = text; // give the text back to fix it
      showToast(`Not sent: ${err.message}`);
    });
});

// -- search (the server's "$search" over what this user may see) -------------------------

const searchEls = {
  form: $("search-form"), input: $("search-input"), box: $("search-results"),
  summary: $("search-summary"), close: $("search-close"),
};
searchEls.form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = searchEls.input.value.trim();
  if (!q) { searchEls.box.hidden = true; return; }
  try {
    const hits = await store.search("messages", q, 20);
    const list = searchEls.box.querySelector("ol");
    list.replaceChildren(...hits.map((h) => {
      const li = document.createElement("li");
      const who = document.createElement("b");
      who.textContent = `${h.value.senderId ?? "?"}: `;
      li.append(who, document.createTextNode(h.value.text ?? ""));
      li.dataset.key = h.key;
      return li;
    }));
    searchEls.summary.textContent = `${hits.length} message${hits.length === 1 ? "" : "s"} match “${q}”`;
    searchEls.box.hidden = false;
  } catch (err) {
    showToast(`Search: ${err.message}`);
  }
});
searchEls.close.addEventListener("click", () => { searchEls.box.hidden = true; });
