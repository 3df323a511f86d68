"""Pure values and decisions: file facts, codecs, manifest and record formats, the remote
tree's meaning and the three-way planner. No I/O."""
