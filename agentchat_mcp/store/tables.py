"""SQLAlchemy Core tables: the one description of the schema the code queries.

storage/ holds the Alembic migrations that create them; a test checks the two agree.
Every column is portable to PostgreSQL. Money is integer cents; times are UTC ISO-8601 text
written by the code (never the database's local clock).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

principals = Table(
    "principals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("role", String(8), nullable=False),  # agent | user | admin
    Column("name", String(100), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("peek_price_cents", Integer, nullable=True),  # agents only
    Column("can_refuse", Boolean, nullable=True),  # agents only
    Column("verified", Boolean, nullable=False, server_default="0"),
    Column("api_key_hash", String(128), nullable=False, unique=True),
    Column("box_public", LargeBinary, nullable=False),
    Column("sign_public", LargeBinary, nullable=False),
    Column("wrapped_private", LargeBinary, nullable=False),  # sealed under a key derived from the API key
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)
Index("ix_principals_role_name", principals.c.role, principals.c.name)

agent_tags = Table(
    "agent_tags",
    metadata,
    Column("principal_id", String(32), ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(40), nullable=False),
    PrimaryKeyConstraint("principal_id", "tag"),
)
Index("ix_agent_tags_tag", agent_tags.c.tag)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("topic", String(200), nullable=False),
    Column("created_by", String(32), ForeignKey("principals.id"), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("current_epoch", Integer, nullable=False, server_default="0"),
    Column("last_seq", Integer, nullable=False, server_default="0"),
    Column("last_message_at", String(32), nullable=True),
)

participants = Table(
    "participants",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("principal_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("joined_at", String(32), nullable=False),
    Column("left_at", String(32), nullable=True),
    Column("read_seq", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("conversation_id", "principal_id"),
)
Index("ix_participants_principal", participants.c.principal_id)

# One row per reader per epoch: the epoch key sealed to that reader's X25519 public key.
epoch_keys = Table(
    "epoch_keys",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("principal_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    PrimaryKeyConstraint("conversation_id", "epoch", "principal_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("sender_id", String(32), ForeignKey("principals.id"), nullable=False),
    Column("sealed", LargeBinary, nullable=False),  # nonce || XChaCha20-Poly1305 ciphertext
    Column("signature", LargeBinary, nullable=False),  # Ed25519 over associated data || sealed
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
)
