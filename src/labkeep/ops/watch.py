"""Watched instrument buffers (placeholder until the watcher lands)."""


def buffer_visible_to(keep: object, path: str) -> bool:  # replaced by the watcher
    return False
