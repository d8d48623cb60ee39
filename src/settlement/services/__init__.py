"""Use cases. Each owns exactly one transaction through a unit of work; nothing below them commits."""
