"""paraplan planner."""
