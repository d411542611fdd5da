"""Coverage-guided fuzz harnesses (atheris) for the untrusted-input entry points."""
