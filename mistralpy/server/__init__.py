"""The OpenAI-compatible HTTP server: `create_app` in app.py, `mistralpy serve` in serve.py."""
