"""The worker's store: SQLAlchemy 2 models, the database engine and the Alembic migrations.

Three tables (DESIGN.md, "Results"): ``lab_jobs``, ``lab_test_results`` and the mapping memory
``lab_test_mappings``. PostgreSQL in production and tests; SQLite works for local runs.
Nothing here knows about SQS or the model.
"""
