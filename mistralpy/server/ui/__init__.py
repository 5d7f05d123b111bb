"""The chat page (`serve --ui`, `mistralpy ui`): static files served at /ui by the API's own server."""
