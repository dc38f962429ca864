"""Alembic's entry point: runs the revisions on the connection `migrate.py` hands over.

There is no alembic.ini and no offline (`--sql`) mode: `migrate.py` builds the configuration and
puts an open connection in `config.attributes["connection"]`.
"""

from alembic import context

from models import metadata

# SQLite cannot alter most of a table in place: batch mode copies the table when it must.
context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
