"""Rewrite rules, one ruleset per concern. Only ``saturate.py`` builds schedules from them."""
