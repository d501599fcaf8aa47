"""Tables of the digest."""
