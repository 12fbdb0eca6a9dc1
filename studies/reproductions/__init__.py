"""Published experiments reproduced with the toolkit (docs/reproductions.md)."""
