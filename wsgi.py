"""gunicorn's entry: `gunicorn wsgi:app`. Reads `.env`; a bad configuration stops it in a sentence.

gunicorn prints an AppImportError's message (no traceback) and exits with status 4.
"""

from gunicorn.errors import AppImportError

from app import deployed_app
from services.diagnose import StartupError

try:
    app = deployed_app()
except StartupError as exc:
    raise AppImportError(exc.message) from None
