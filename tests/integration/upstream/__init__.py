"""The HTTP edge to the unified API: bounded, classified answers, and lies that cost no record."""
