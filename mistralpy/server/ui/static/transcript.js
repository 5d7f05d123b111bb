// The conversation on screen: one <article> per message; an answer rendered as it streams, with its figures.

import { renderJson, renderMarkdown } from "./render.js";

const WHO = { user: "You", assistant: "Assistant" };

export function messageElement(message) {
  const article = document.createElement("article");
  article.className = `msg ${message.role}`;
  const who = document.createElement("p");
  who.className = "who";
  who.textContent = WHO[message.role] || message.role;
  const content = document.createElement("div");
  content.className = "content";
  const stats = document.createElement("p");
  stats.className = "stats";
  article.append(who, content, stats);
  showMessage(article, message);
  return article;
}

export function showMessage(article, message) {
  const content = article.querySelector(".content");
  if (message.role !== "assistant") content.textContent = message.content;
  else if (message.json) renderJson(content, message.content);
  else renderMarkdown(content, message.content);
  if (message.error) {
    const error = document.createElement("p");
    error.className = "error";
    error.textContent = message.error;
    content.append(error);
  }
  article.querySelector(".stats").textContent = statsText(message.stats);
}

// stats: {tokens, firstTokenSeconds, decodeSeconds, seconds, finish, stopped}; tokens from the server's usage.
export function statsText(stats) {
  if (!stats) return "";
  if (stats.stopped) return `Stopped after ${stats.seconds.toFixed(1)} s`;
  const parts = [];
  if (stats.model) parts.push(stats.model);
  if (stats.tokens !== undefined) parts.push(`${stats.tokens} tokens`);
  if (stats.tokens > 1 && stats.decodeSeconds > 0) {
    parts.push(`${((stats.tokens - 1) / stats.decodeSeconds).toFixed(1)} tok/s`);
  }
  if (stats.firstTokenSeconds !== undefined) parts.push(`first token after ${stats.firstTokenSeconds.toFixed(2)} s`);
  if (stats.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

// Repaints at most once a frame however fast the tokens come.
export class Painter {
  constructor(article, message) {
    this.article = article;
    this.message = message;
    this.pending = false;
  }

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.now();
    });
  }

  // Follows the answer down unless the reader has scrolled up to read something else.
  now() {
    const box = this.article.parentElement;
    const atEnd = box !== null && box.scrollHeight - box.scrollTop - box.clientHeight < 48;
    showMessage(this.article, this.message);
    if (atEnd) box.scrollTop = box.scrollHeight;
  }
}
