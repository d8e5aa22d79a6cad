"""Web assets and routes: the analytics MCP App and the /dashboard on the hub."""
