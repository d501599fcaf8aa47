"""Tables of the connection lifecycle."""
