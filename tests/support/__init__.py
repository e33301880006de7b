"""Helpers shared by test packages (real servers started on loopback)."""
