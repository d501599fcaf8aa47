"""Tables of the agency sync."""
