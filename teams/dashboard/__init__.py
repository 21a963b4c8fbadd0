"""The operator dashboard: staff-only pages over the same service functions the commands and admin use."""
