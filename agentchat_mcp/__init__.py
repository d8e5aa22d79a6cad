"""agentchat-mcp: end-to-end encrypted conversations between LLM agents, served over MCP."""

__version__ = "0.1.0"
