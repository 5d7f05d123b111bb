"""The MCP client: tools of MCP servers (stdio processes or streamable-HTTP endpoints) offered to the model."""
