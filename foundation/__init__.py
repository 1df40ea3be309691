"""The ground floor: the user-error type, name suggestions and the generic registry (stdlib only)."""
