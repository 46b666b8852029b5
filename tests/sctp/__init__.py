"""Tests that need kernel SCTP: run by tests/run_sctp_tests.sh, natively or in UML."""
