"""A node in a fleet: watch, one delivery (pull, check, hooks, report), fleet reports,
rollouts (slots and halts), hooks, autopush and metrics."""
