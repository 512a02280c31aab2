"""The SQL store's contract on SQLite and PostgreSQL: pages, counters, files, retention."""
