"""The dashboard in fleet-server: fleetctl's page, fed from the inventory, behind a login.

pages.py mounts the routes; feed.py makes the page's live model from the inventory;
sessions.py and csrf.py are the browser's login (a token entered once becomes an HttpOnly,
SameSite=Strict session cookie) and its CSRF token; auth.py lets the API accept that
session, so the page's actions are the API's requests with their roles and audit.
"""
