"""The request flow: the typed request, its events, and the service that runs steps 1-9."""
