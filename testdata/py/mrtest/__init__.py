"""Python functions for meadowrun's Python worker tests."""
