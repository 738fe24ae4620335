//! Hostile input: the rest of the surface (classify, console, path and query parameters, TLS, stated intents).
