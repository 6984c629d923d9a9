"""Front ends over the functions: the `udb` command line and the MCP server for AI agents. They
may import the functions; nothing in `shared/` or `functions/` imports them."""
