"""Events and their signed webhook deliveries to customers (the outbox)."""
