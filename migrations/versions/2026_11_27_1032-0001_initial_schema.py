"""Initial schema: projects, keys, tasks, estimates, observations, schedules, runs, reports.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 10:32:10.573756
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ordo_schedules.run_id -> ordo_runs and ordo_runs.schedule_id -> ordo_schedules form a cycle.
# PostgreSQL adds this side once both tables exist; SQLite cannot ALTER constraints but accepts a
# reference to a table that does not exist yet, so there it is declared inline.
SCHEDULE_RUN_FK = "fk_ordo_schedules_run_id_ordo_runs"


def _is_sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _schedule_run_fk_inline() -> list[sa.ForeignKeyConstraint]:
    if not _is_sqlite():
        return []
    return [
        sa.ForeignKeyConstraint(
            ["run_id"], ["ordo_runs.id"], name=SCHEDULE_RUN_FK, ondelete="SET NULL"
        )
    ]


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ordo_projects",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("estimates_version", sa.BigInteger(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_ordo_projects_name")),
    )
    op.create_table(
        "ordo_api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'trainer')", name=op.f("ck_ordo_api_keys_role")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_api_keys_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_ordo_api_keys_key_id")),
    )
    with op.batch_alter_table("ordo_api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ordo_api_keys_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "ordo_schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(length=36), nullable=True),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("estimates_version", sa.BigInteger(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("order", sa.JSON(), nullable=False),
        sa.Column("objective", sa.Double(), nullable=False),
        sa.Column("bound", sa.Double(), nullable=True),
        sa.Column("gap", sa.Double(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("wall_time_s", sa.Double(), nullable=False),
        sa.Column("predicted", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["ordo_schedules.id"],
            name=op.f("fk_ordo_schedules_parent_id_ordo_schedules"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_schedules_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        *_schedule_run_fk_inline(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_schedules")),
        sa.UniqueConstraint(
            "project_id", "version", name=op.f("uq_ordo_schedules_project_id_version")
        ),
    )
    with op.batch_alter_table("ordo_schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ordo_schedules_run_id"), ["run_id"], unique=False)

    op.create_table(
        "ordo_tasks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reward", sa.String(length=16), nullable=False),
        sa.Column("goal", sa.String(length=16), nullable=False),
        sa.Column("scale", sa.Double(), nullable=False),
        sa.Column("weight", sa.Double(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("goal IN ('maximize', 'minimize')", name=op.f("ck_ordo_tasks_goal")),
        sa.CheckConstraint(
            "kind IN ('structured', 'open_ended', 'other')", name=op.f("ck_ordo_tasks_kind")
        ),
        sa.CheckConstraint(
            "reward IN ('verifiable', 'preference', 'other')", name=op.f("ck_ordo_tasks_reward")
        ),
        sa.CheckConstraint("scale > 0", name=op.f("ck_ordo_tasks_scale_positive")),
        sa.CheckConstraint("weight >= 0", name=op.f("ck_ordo_tasks_weight_non_negative")),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_tasks_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_tasks")),
        sa.UniqueConstraint("project_id", "index", name=op.f("uq_ordo_tasks_project_id_index")),
        sa.UniqueConstraint("project_id", "key", name=op.f("uq_ordo_tasks_project_id_key")),
    )
    op.create_table(
        "ordo_estimates",
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("effect", sa.String(length=1), nullable=False),
        sa.Column("src_task_id", sa.String(length=36), nullable=False),
        sa.Column("dst_task_id", sa.String(length=36), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum_x", sa.Double(), nullable=False),
        sa.Column("sum_x2", sa.Double(), nullable=False),
        sa.Column("prior_mean", sa.Double(), nullable=True),
        sa.Column("prior_var", sa.Double(), nullable=True),
        sa.Column("prior_source", sa.String(length=16), nullable=False),
        sa.Column("noise_var", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "effect IN ('F', 'B', 'L', 'G', 'D')", name=op.f("ck_ordo_estimates_effect")
        ),
        sa.CheckConstraint(
            "prior_source IN ('imported', 'empirical', 'default')",
            name=op.f("ck_ordo_estimates_prior_source"),
        ),
        sa.CheckConstraint(
            "noise_var IS NULL OR noise_var > 0", name=op.f("ck_ordo_estimates_noise_var_positive")
        ),
        sa.CheckConstraint(
            "prior_var IS NULL OR prior_var > 0", name=op.f("ck_ordo_estimates_prior_var_positive")
        ),
        sa.ForeignKeyConstraint(
            ["dst_task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_estimates_dst_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_estimates_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["src_task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_estimates_src_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "effect", "src_task_id", "dst_task_id", name=op.f("pk_ordo_estimates")
        ),
    )
    op.create_table(
        "ordo_runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=True),
        sa.Column("schedule_id", sa.String(length=36), nullable=True),
        sa.Column("adaptive", sa.Boolean(), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_stage", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.BigInteger(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'stale', 'completed', 'failed')", name=op.f("ck_ordo_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_runs_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["ordo_schedules.id"],
            name=op.f("fk_ordo_runs_schedule_id_ordo_schedules"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_runs")),
        sa.UniqueConstraint(
            "project_id", "client_id", name=op.f("uq_ordo_runs_project_id_client_id")
        ),
    )
    if not _is_sqlite():
        op.create_foreign_key(
            SCHEDULE_RUN_FK, "ordo_schedules", "ordo_runs", ["run_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "ordo_stage_reports",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=True),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("steps", sa.BigInteger(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("wall_time_s", sa.Double(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_stage_reports_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["ordo_runs.id"],
            name=op.f("fk_ordo_stage_reports_run_id_ordo_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_stage_reports_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_stage_reports")),
        sa.UniqueConstraint("run_id", "stage", name=op.f("uq_ordo_stage_reports_run_id_stage")),
    )
    with op.batch_alter_table("ordo_stage_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ordo_stage_reports_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "ordo_observations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("project_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("report_id", sa.String(length=36), nullable=True),
        sa.Column("effect", sa.String(length=1), nullable=False),
        sa.Column("src_task_id", sa.String(length=36), nullable=False),
        sa.Column("dst_task_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "effect IN ('F', 'B', 'L', 'G', 'D')", name=op.f("ck_ordo_observations_effect")
        ),
        sa.ForeignKeyConstraint(
            ["dst_task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_observations_dst_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["ordo_projects.id"],
            name=op.f("fk_ordo_observations_project_id_ordo_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["ordo_stage_reports.id"],
            name=op.f("fk_ordo_observations_report_id_ordo_stage_reports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["ordo_runs.id"],
            name=op.f("fk_ordo_observations_run_id_ordo_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["src_task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_observations_src_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_observations")),
    )
    with op.batch_alter_table("ordo_observations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ordo_observations_project_id"), ["project_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ordo_observations_report_id"), ["report_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_ordo_observations_run_id"), ["run_id"], unique=False)

    op.create_table(
        "ordo_stage_evaluations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("report_id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("utility", sa.Double(), nullable=False),
        sa.Column("stderr", sa.Double(), nullable=True),
        sa.Column("entropy", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["ordo_stage_reports.id"],
            name=op.f("fk_ordo_stage_evaluations_report_id_ordo_stage_reports"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["ordo_tasks.id"],
            name=op.f("fk_ordo_stage_evaluations_task_id_ordo_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ordo_stage_evaluations")),
        sa.UniqueConstraint(
            "report_id", "task_id", name=op.f("uq_ordo_stage_evaluations_report_id_task_id")
        ),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("ordo_stage_evaluations")
    with op.batch_alter_table("ordo_observations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ordo_observations_run_id"))
        batch_op.drop_index(batch_op.f("ix_ordo_observations_report_id"))
        batch_op.drop_index(batch_op.f("ix_ordo_observations_project_id"))

    op.drop_table("ordo_observations")
    with op.batch_alter_table("ordo_stage_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ordo_stage_reports_project_id"))

    op.drop_table("ordo_stage_reports")
    if not _is_sqlite():
        op.drop_constraint(SCHEDULE_RUN_FK, "ordo_schedules", type_="foreignkey")
    op.drop_table("ordo_runs")
    op.drop_table("ordo_estimates")
    op.drop_table("ordo_tasks")
    with op.batch_alter_table("ordo_schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ordo_schedules_run_id"))

    op.drop_table("ordo_schedules")
    with op.batch_alter_table("ordo_api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ordo_api_keys_project_id"))

    op.drop_table("ordo_api_keys")
    op.drop_table("ordo_projects")
