"""Published JSON Schemas (package data)."""
