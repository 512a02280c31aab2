"""Celery plumbing: the app, its start-up checks, the task base, beat.

Pipeline: ``celery -A worker`` -> ``app.create_app`` (configuration, queues,
routes, the broker-loss fixes of ``broker_loss``) -> ``startup.check_ready``
at worker start -> every task runs on ``task_base.SyncTask`` -> beat sends
the housekeeping tick through ``beat.HeartbeatScheduler``.

Nothing below this package imports the Celery app: the tasks hand their
``app.send_task`` down as a ``jobs.Publish`` (named ``celeryapp`` so that it
does not shadow the ``celery`` package).
"""
