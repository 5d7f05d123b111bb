"""OpenAI's Responses API (POST /v1/responses; GET, DELETE and cancel by id) over the chat completion path: a request
becomes a ChatCompletionRequest (with the stored conversation of its previous_response_id), the chat completion or its
chunk stream becomes a Response object or Responses' named events."""
