"""The web side: pages, the admin dashboard, OAuth and the cron endpoints (Flask blueprints)."""
