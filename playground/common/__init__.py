"""Small helpers every layer shares, one copy each: atomic file writes, file hashes, JSON-safe numbers."""
