"""Storage: ClickHouse, the writer and its spool, migrations, the accounts table."""
