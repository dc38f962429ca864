"""Vercel's entry point: the WSGI app."""

from app import create_app

app = create_app()
