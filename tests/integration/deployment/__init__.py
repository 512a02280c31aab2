"""How it is deployed: docker-compose.yml and the Dockerfile, the test services."""
