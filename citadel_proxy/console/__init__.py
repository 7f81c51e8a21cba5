"""The operator's console in the browser: /console/, behind a signed session cookie (see session.py)."""
