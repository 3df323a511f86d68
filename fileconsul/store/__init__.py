"""Consul: the HTTP client, the key layout, reading a tree, committing one, the push lock,
undoing a push that died, and what falls out of the history."""
