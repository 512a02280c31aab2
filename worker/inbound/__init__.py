"""Webhooks the unified API sends us: hints that something changed upstream.

Pipeline: ``receiver`` (``entity-sync receiver``) verifies the signature over
the raw body, caps and parses it, keeps the event in the store by its id and
answers -> publishes ``entity_sync.upstream_event`` (``tasks/inbound.py``) ->
``actions.process_event`` acts as the worker could have by itself (halt,
open, probe, sync, record). Polling, the preflight and the breakers stay the
truth.
"""
