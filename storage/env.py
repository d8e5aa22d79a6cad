"""Alembic environment: migrations run on the connection agentchat_mcp hands in."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("Run migrations with `agentchat-mcp db upgrade`, which opens the database for you.")

context.configure(connection=connection, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
