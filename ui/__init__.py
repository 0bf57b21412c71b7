"""paraplan ui."""
