// The chat page: conversations, settings, the model list and the API key, wired to the DOM.

import { ApiError, listModels } from "./api.js";
import { requestBody, streamAnswer } from "./chat.js";
import { KeyDialog } from "./key.js";
import * as store from "./store.js";
import { Painter, messageElement } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const SETTING_FIELDS = ["system", "temperature", "top_p", "max_tokens", "seed"];
const state = {
  settings: store.loadSettings(),
  conversations: store.loadConversations(),
  current: null,
  keys: null, // the KeyDialog, made once the page is wired
  retry: null, // the timer of the next try at the model list while the model loads
  controller: null, // the AbortController of the answer being streamed
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function persist() {
  try {
    store.saveConversations(state.conversations, state.current.id);
    store.saveSettings(state.settings);
  } catch (error) {
    setStatus(`Could not save in the browser's storage: ${error.message}`, true);
  }
}

// --- conversations ---

function selectConversation(conversation) {
  state.current = conversation;
  $("transcript").replaceChildren(...conversation.messages.map(messageElement));
  $("transcript").scrollTop = $("transcript").scrollHeight;
  renderConversationList();
}

function renderConversationList() {
  const items = [...state.conversations].sort((a, b) => b.updated - a.updated).map((conversation) => {
    const li = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.textContent = conversation.title;
    open.setAttribute("aria-current", String(conversation === state.current));
    open.addEventListener("click", () => selectConversation(conversation));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Delete conversation: ${conversation.title}`);
    remove.addEventListener("click", () => deleteConversation(conversation));
    li.append(open, remove);
    return li;
  });
  $("conversation-list").replaceChildren(...items);
  const busy = state.controller !== null; // the answer being streamed belongs to the current conversation
  for (const button of $("conversations").querySelectorAll("button")) button.disabled = busy;
}

function newConversation() {
  const conversation = store.newConversation();
  state.conversations.push(conversation);
  selectConversation(conversation);
  persist();
  $("message").focus();
}

function deleteConversation(conversation) {
  state.conversations = state.conversations.filter((c) => c !== conversation);
  if (state.conversations.length === 0) state.conversations.push(store.newConversation());
  if (conversation === state.current) {
    selectConversation([...state.conversations].sort((a, b) => b.updated - a.updated)[0]);
  } else {
    renderConversationList();
  }
  persist();
}

// --- sending, stopping ---

async function send() {
  const text = $("message").value;
  if (!text.trim() || state.controller) return;
  const conversation = state.current;
  const user = { role: "user", content: text };
  const answer = { role: "assistant", content: "", json: state.settings.json };
  conversation.messages.push(user, answer);
  if (conversation.title === "New chat") conversation.title = text.trim().slice(0, 60);
  conversation.updated = Date.now();
  $("message").value = "";
  persist();
  const article = messageElement(answer);
  article.setAttribute("aria-busy", "true");
  $("transcript").append(messageElement(user), article);
  $("transcript").scrollTop = $("transcript").scrollHeight;
  const painter = new Painter(article, answer);
  setBusy(new AbortController());
  setStatus("Generating…");
  const body = requestBody({ messages: conversation.messages.slice(0, -1) }, state.settings);
  try {
    await streamAnswer(body, state.keys.key, state.controller.signal, answer, () => painter.request());
    setStatus(answer.stats.stopped ? "Stopped." : "");
  } catch (error) {
    failed(conversation, user, answer, article, error);
  } finally {
    article.setAttribute("aria-busy", "false");
    if (conversation.messages.includes(answer)) painter.now();
    setBusy(null);
    persist();
  }
}

// Before any output the message is taken back into the box (nothing was answered); after, the partial answer stays.
function failed(conversation, user, answer, article, error) {
  const message = describe(error);
  if (answer.content === "") {
    conversation.messages.splice(conversation.messages.indexOf(user), 2);
    article.previousElementSibling.remove();
    article.remove();
    $("message").value = user.content;
    setStatus(`Not sent: ${message}`, true);
  } else {
    answer.error = message;
    setStatus(message, true);
  }
  if (error instanceof ApiError && error.status === 401) state.keys.ask(message);
}

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 401) return `The server needs a valid API key (401: ${error.message}).`;
    return `Error ${error.status}: ${error.message}`;
  }
  return `The request failed: ${error.message}`;
}

function setBusy(controller) {
  state.controller = controller;
  $("send").disabled = controller !== null;
  $("stop").disabled = controller === null;
  $("model").disabled = controller !== null || $("model").options.length === 0;
  renderConversationList();
}

function stop() {
  if (state.controller) state.controller.abort();
}

// --- models, settings ---

async function loadModels() {
  clearTimeout(state.retry);
  try {
    const ids = await listModels(state.keys.key);
    const select = $("model");
    select.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (!ids.includes(state.settings.model)) state.settings.model = ids[0] || "";
    select.value = state.settings.model;
    select.disabled = state.controller !== null;
    setStatus("");
  } catch (error) {
    if (error instanceof ApiError && error.status === 503) {
      setStatus("The model is loading…");
      state.retry = setTimeout(loadModels, 1000);
      return;
    }
    setStatus(`Could not list the models: ${describe(error)}`, true);
    if (error instanceof ApiError && error.status === 401) state.keys.ask(describe(error));
  }
}

function readSettingsForm() {
  for (const field of SETTING_FIELDS) state.settings[field] = $(field).value;
  state.settings.json = $("json").checked;
  persist();
}

function fillSettingsForm() {
  for (const field of SETTING_FIELDS) $(field).value = state.settings[field];
  $("json").checked = state.settings.json;
}

function togglePanel(button) {
  const panel = $(button.getAttribute("aria-controls"));
  const open = !panel.classList.contains("open");
  panel.classList.toggle("open", open);
  button.setAttribute("aria-expanded", String(open));
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    } else if (event.key === "Escape") {
      stop();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newConversation);
  $("settings-form").addEventListener("input", readSettingsForm);
  $("settings-form").addEventListener("submit", (event) => event.preventDefault());
  $("model").addEventListener("change", () => {
    state.settings.model = $("model").value;
    persist();
  });
  $("toggle-conversations").addEventListener("click", (event) => togglePanel(event.currentTarget));
  $("toggle-settings").addEventListener("click", (event) => togglePanel(event.currentTarget));
}

function start() {
  wire();
  fillSettingsForm();
  state.keys = new KeyDialog(loadModels);
  if (state.conversations.length === 0) state.conversations.push(store.newConversation());
  const saved = store.loadCurrentId();
  selectConversation(state.conversations.find((c) => c.id === saved) || state.conversations[0]);
  loadModels();
}

start();
