"""The domain: plain async Python over the store; no MCP types here."""
