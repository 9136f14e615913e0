"""PostgreSQL: the pool, the named queries, the store and migrations. The only psycopg importer."""
