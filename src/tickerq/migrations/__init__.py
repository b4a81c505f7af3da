"""tickerq's Alembic migrations, shipped inside the package.

There is no ``alembic.ini`` or ``env.py``: :mod:`tickerq.stores.sql.migrate`
runs these scripts programmatically, keeping the revision in the table
``tickerq_alembic_version`` (so an application's own ``alembic_version`` is
left alone).

Adding a schema change:

1. change :mod:`tickerq.stores.sql.schema`;
2. write ``versions/NNNN_what.py`` with ``revision = "NNNN"`` and
   ``down_revision`` set to the previous one, using explicit ``op.*`` calls
   (never ``metadata.create_all``: a migration must keep describing the schema
   of its own time). ``alembic.command.revision(migrate.config(), "what",
   rev_id="NNNN")`` writes the skeleton from ``script.py.mako``;
3. set ``schema.SCHEMA_VERSION`` to ``"NNNN"``.

On SQLite, changes to existing columns or constraints need
``op.batch_alter_table``.
"""
