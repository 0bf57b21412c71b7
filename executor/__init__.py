"""paraplan executor."""
