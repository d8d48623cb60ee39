"""The pure settlement domain: no I/O, no clock, no imports from the rest of the project."""
