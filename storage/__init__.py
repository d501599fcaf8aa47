"""Tables, engine, sessions, queries and migrations. Nothing outside this package writes SQL."""
