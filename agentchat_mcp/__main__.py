"""`python -m agentchat_mcp` is the `agentchat-mcp` command."""

from agentchat_mcp.cli import main

if __name__ == "__main__":
    main()
