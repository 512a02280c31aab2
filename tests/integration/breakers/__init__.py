"""Breakers, pauses, rate and concurrency limits and retry budgets on a real Redis."""
