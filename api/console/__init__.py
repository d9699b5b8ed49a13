"""The web console (api/console/router.py)."""
