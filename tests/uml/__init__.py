"""The User-Mode Linux guest: its kernel, the harness and the test host."""
