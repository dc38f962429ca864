"""Vercel's entry point: the WSGI app (a bad configuration answers 503 with its sentence)."""

from app import vercel_app

app = vercel_app()
