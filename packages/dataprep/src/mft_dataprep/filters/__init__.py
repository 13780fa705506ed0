"""Content filters applied after validation (quality rules); each returns a rejection reason or None."""
