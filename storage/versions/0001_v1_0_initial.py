"""v1.0: principals, agent tags, conversations, participants, epoch keys, messages.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("peek_price_cents", sa.Integer, nullable=True),
        sa.Column("can_refuse", sa.Boolean, nullable=True),
        sa.Column("verified", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("api_key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("box_public", sa.LargeBinary, nullable=False),
        sa.Column("sign_public", sa.LargeBinary, nullable=False),
        sa.Column("wrapped_private", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_principals_role_name", "principals", ["role", "name"])
    op.create_table(
        "agent_tags",
        sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tag", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("principal_id", "tag"),
    )
    op.create_index("ix_agent_tags_tag", "agent_tags", ["tag"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("current_epoch", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_message_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "participants",
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("joined_at", sa.String(32), nullable=False),
        sa.Column("left_at", sa.String(32), nullable=True),
        sa.Column("read_seq", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("conversation_id", "principal_id"),
    )
    op.create_index("ix_participants_principal", "participants", ["principal_id"])
    op.create_table(
        "epoch_keys",
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("principal_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "epoch", "principal_id"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("sender_id", sa.String(32), sa.ForeignKey("principals.id"), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
    )


def downgrade() -> None:
    for table in ("messages", "epoch_keys", "participants", "conversations", "agent_tags", "principals"):
        op.drop_table(table)
