// What the page keeps in the browser: conversations and settings (localStorage), the API key (sessionStorage,
// or localStorage when the user asks to remember it).

const KEYS = {
  conversations: "mistralpy.ui.conversations",
  current: "mistralpy.ui.current",
  settings: "mistralpy.ui.settings",
  apiKey: "mistralpy.ui.apiKey",
};

export const DEFAULT_SETTINGS = {
  model: "", system: "", temperature: "", top_p: "", max_tokens: "", seed: "", json: false,
};

function read(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback; // unreadable (hand-edited, another version's): start afresh rather than break the page
  }
}

// Throws when the browser refuses (storage full or disabled): the caller says so.
function write(key, value) {
  localStorage.setItem(key, JSON.stringify(value));
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(KEYS.settings, {}) };
}

export function saveSettings(settings) {
  write(KEYS.settings, settings);
}

export function loadConversations() {
  const list = read(KEYS.conversations, []);
  return Array.isArray(list) ? list.filter((c) => c && c.id && Array.isArray(c.messages)) : [];
}

export function saveConversations(list, currentId) {
  write(KEYS.conversations, list);
  write(KEYS.current, currentId);
}

export function loadCurrentId() {
  return read(KEYS.current, null);
}

// Not crypto.randomUUID: that exists only in secure contexts, and the page may be served over plain http on a LAN.
export function newConversation() {
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  return { id, title: "New chat", messages: [], updated: Date.now() };
}

export function loadKey() {
  return sessionStorage.getItem(KEYS.apiKey) || localStorage.getItem(KEYS.apiKey) || "";
}

export function keyIsRemembered() {
  return localStorage.getItem(KEYS.apiKey) !== null;
}

export function saveKey(key, remember) {
  (remember ? localStorage : sessionStorage).setItem(KEYS.apiKey, key);
  (remember ? sessionStorage : localStorage).removeItem(KEYS.apiKey);
}

export function forgetKey() {
  sessionStorage.removeItem(KEYS.apiKey);
  localStorage.removeItem(KEYS.apiKey);
}
