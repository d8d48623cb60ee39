"""The REST API (FastAPI): routers call the services; errors become problem+json with stable codes."""
