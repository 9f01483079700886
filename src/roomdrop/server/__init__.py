"""The roomdrop server: rooms, authentication, signalling, the transfer router and the
relay. ``create_app(settings)`` builds the FastAPI application; ``roomdrop serve`` runs it
under uvicorn."""
