"""vigil's tests (docs/design.md, "Tests")."""
