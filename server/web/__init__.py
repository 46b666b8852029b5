"""HTTP: the h11 session, each connection's state, TLS, the routes and their handlers,
static files and the access log."""
