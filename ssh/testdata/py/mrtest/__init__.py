"""Python functions for the SSH host's Python worker tests."""
