"""What each command does, composing the store and the local tree: status, push, pull (with
apply), preflight, history, diff and rollback, and their interrupts."""
