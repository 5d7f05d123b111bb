// The server's OpenAI API as the page uses it: the model list and streamed chat completions (SSE).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(key) {
  const h = { "Content-Type": "application/json" };
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: the status line says enough
  }
  return new ApiError(response.status, message);
}

// Relative to /ui/, so that the page works behind a proxy that serves the server under a path.
export async function listModels(key) {
  const response = await fetch("../v1/models", { headers: headers(key) });
  if (!response.ok) throw await errorOf(response);
  return (await response.json()).data.map((m) => m.id);
}

// Yields each chunk of the stream; an error event after the answer began is thrown as an ApiError.
// Aborting `signal` rejects the pending read with an AbortError and closes the connection: the server then
// aborts the request and frees its KV cache.
export async function* streamChat(body, key, signal) {
  const response = await fetch("../v1/chat/completions", {
    method: "POST", headers: headers(key), body: JSON.stringify(body), signal,
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(chunk.error.code || 500, chunk.error.message);
      yield chunk;
    }
  }
}
