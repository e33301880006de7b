"""The HTTP edge: how requests reach the app (serving worker, framing)."""
