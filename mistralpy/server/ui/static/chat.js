// One answer: the request built from the conversation and the settings, streamed into its message.

import { streamChat } from "./api.js";

export function requestBody(conversation, settings) {
  const messages = [];
  if (settings.system.trim()) messages.push({ role: "system", content: settings.system });
  for (const m of conversation.messages) {
    if (m.content || m.role === "user") messages.push({ role: m.role, content: m.content });
  }
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (settings.model) body.model = settings.model;
  // Empty means the server's default; anything else is sent as a number and checked by the server (its 400
  // names the field).
  for (const field of ["temperature", "top_p", "max_tokens", "seed"]) {
    if (settings[field] !== "") body[field] = Number(settings[field]);
  }
  if (settings.json) body.response_format = { type: "json_object" };
  return body;
}

// Streams into `message` ({role, content, json, stats}), calling `changed` after each piece. Resolves when the
// answer ends; an abort through `signal` ends it as stopped. Other failures are thrown.
export async function streamAnswer(body, key, signal, message, changed) {
  const start = performance.now();
  let first = null;
  let finish = null;
  let usage = null;
  try {
    for await (const chunk of streamChat(body, key, signal)) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        const piece = choice.delta.content;
        if (piece) {
          if (first === null) first = performance.now();
          message.content += piece;
          changed();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
    message.stats = { stopped: true, seconds: (performance.now() - start) / 1000 };
    return;
  }
  const end = performance.now();
  message.stats = {
    model: body.model,
    tokens: usage ? usage.completion_tokens : undefined,
    firstTokenSeconds: first === null ? undefined : (first - start) / 1000,
    decodeSeconds: first === null ? 0 : (end - first) / 1000,
    finish,
  };
}
