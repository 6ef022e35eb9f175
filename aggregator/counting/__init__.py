"""Counting: sessions from events, minute cells with their viewers (memory only)."""
