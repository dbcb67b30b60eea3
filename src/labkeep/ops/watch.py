"""Watched instrument buffers (placeholder until the watcher lands)."""
