"""What leaves the process: Sentry events, and no token anywhere."""
